"""``reinforcens train``: train a recommender with a negative sampler on a prepared dataset."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable
from typing import Any

from reinforcens.cli._common import fmt, parse_options, print_json, seed
from reinforcens.config import TrainConfig
from reinforcens.data.prepared import load_prepared
from reinforcens.errors import ConfigError
from reinforcens.samplers import SAMPLERS, canonical_name


def init_std(text: str) -> float | str:
    """``--init-std``: a standard deviation, or ``xavier``."""
    if text.strip().lower() == "xavier":
        return "xavier"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'xavier', got {text!r}") from None


#: training options shared by ``train``, ``compare``, ``sweep``...: (flag, config key, type)
TRAIN_FLAGS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("--model", "model", str),
    ("--layers", "layers", int),
    ("--sampler-model", "sampler_model", str),
    ("--optimizer", "optimizer", str),
    ("--epochs", "epochs", int),
    ("--pretrain-epochs", "pretrain_epochs", int),
    ("--patience", "patience", int),
    ("--pretrain-patience", "pretrain_patience", int),
    ("--min-steps", "min_steps", int),
    ("--below-pretrained-stop", "below_pretrained_stop", int),
    ("--eval-every", "eval_every", int),
    ("--batch-size", "batch_size", int),
    ("--lr", "lr", float),
    ("--l2", "l2", float),
    ("--dim", "dim", int),
    ("--init-std", "init_std", init_std),
    ("--negatives-per-positive", "negatives_per_positive", int),
    ("--pretrain-negatives", "pretrain_negatives", int),
    ("--init", "init", str),
    ("--pretrained", "pretrained", str),
    ("--device", "device", str),
    ("--backend", "backend", str),
)


def _sampler_fields() -> dict[str, Any]:
    """Every sampler option, by name (an option shared by samplers has one type)."""
    fields: dict[str, Any] = {}
    for cls in SAMPLERS.values():
        for name, info in cls.Config.model_fields.items():
            fields.setdefault(name, info)
    return fields


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Add the training flags and every sampler's options (all default to 'not given')."""
    g = p.add_argument_group("training")
    for flag, key, typ in TRAIN_FLAGS:
        g.add_argument(flag, dest=key, type=typ, default=None, help=_help(key))
    s = p.add_argument_group("sampler options (each applies to the samplers that have it)")
    for name, info in _sampler_fields().items():
        flag = "--" + name.replace("_", "-")
        ann = typing.get_origin(info.annotation) or info.annotation
        if info.annotation is bool:
            s.add_argument(
                flag,
                dest=f"opt_{name}",
                default=None,
                action=argparse.BooleanOptionalAction,
                help=info.description,
            )
        elif ann is tuple:
            s.add_argument(
                flag,
                dest=f"opt_{name}",
                default=None,
                type=lambda t: tuple(float(x) for x in t.split(",")),
                help=(info.description or "") + " (comma-separated)",
            )
        elif ann is typing.Literal:
            choices = typing.get_args(info.annotation)
            s.add_argument(flag, dest=f"opt_{name}", choices=choices, default=None, help=info.description)
        else:
            typ = float if "float" in str(info.annotation) else int
            s.add_argument(flag, dest=f"opt_{name}", type=typ, default=None, help=info.description)
    s.add_argument(
        "--sampler-option",
        action="append",
        metavar="KEY=VALUE",
        help="any sampler option (repeatable)",
    )


def _help(key: str) -> str:
    info = TrainConfig.model_fields[key]
    return f"{info.description} (default {info.default})"


def training_values(args: argparse.Namespace, sampler: str | None) -> dict[str, Any]:
    """Config values given on the command line; sampler options checked against ``sampler``."""
    values: dict[str, Any] = {}
    for _, key, _ in TRAIN_FLAGS:
        v = getattr(args, key, None)
        if v is not None:
            values[key] = v
    opts = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    opts.update(parse_options(getattr(args, "sampler_option", None)))
    if sampler is not None and opts:
        fields = SAMPLERS[canonical_name(sampler)].Config.model_fields
        unknown = [k for k in opts if k not in fields]
        if unknown:
            raise ConfigError(
                f"sampler {sampler!r} has no option {', '.join(unknown)} "
                f"(its options: {', '.join(fields) or 'none'})"
            )
    values["sampler_options"] = opts
    return values


def sampler_list() -> str:
    """The samplers, one line each (their :attr:`~reinforcens.samplers.NegativeSampler.summary`)."""
    width = max(len(name) for name in SAMPLERS)
    lines = [f"  {name:<{width}}  {cls.summary}" for name, cls in SAMPLERS.items()]
    return "samplers (--sampler):\n" + "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a recommender with a negative sampler",
        description="Train a recommender (--model gmf, mf or lightgcn) with BPR while a negative "
        "sampler picks the negatives.",
        epilog=sampler_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--sampler", required=True, help="negative sampler: " + ", ".join(SAMPLERS))
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--config", help="a JSON config file (command-line flags override it)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    add_training_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reinforcens.parallel import make_parallel, run_device
    from reinforcens.train import Trainer, resolve_device

    base: dict[str, Any] = {}
    if args.config:
        base = TrainConfig.load(args.config).model_dump()
        if canonical_name(base["sampler"]) != canonical_name(args.sampler):
            base["sampler_options"] = {}
    values = training_values(args, args.sampler)
    opts = {**base.get("sampler_options", {}), **values.pop("sampler_options")}
    config = TrainConfig.build(
        **{**base, **values, "sampler": args.sampler, "seed": args.seed, "sampler_options": opts}
    )
    data = load_prepared(args.data)
    # under torchrun (WORLD_SIZE > 1) the ranks join one process group and train the run together
    parallel = make_parallel(run_device(resolve_device(config.device)))
    try:
        trainer = Trainer(
            data, config, args.out, progress=not args.quiet, resume=args.resume, parallel=parallel
        )
        metrics = trainer.fit()
    finally:
        parallel.close()
    if parallel.is_main:
        print_metrics(metrics, args.json)
    return 0


def print_metrics(metrics: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(metrics)
        return
    for split in ("valid", "test"):
        keys = [k for k in metrics if k.startswith(split + ".")]
        parts = [
            f"{k.split('.', 1)[1]} {fmt(metrics[k]) if isinstance(metrics[k], float) else metrics[k]}"
            for k in keys
        ]
        print(f"{split:5s}  " + "  ".join(parts))
    print(
        f"best epoch {metrics['best_epoch']} of {metrics['epochs']}, "
        f"{metrics['train_seconds_per_epoch']:.2f} s/epoch, {metrics['seconds']:.1f} s in all"
    )
