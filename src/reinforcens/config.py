"""Validated training configuration; the resolved config is saved with every run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reinforcens.errors import ConfigError


class StrictModel(BaseModel):
    """The base of every configuration: unknown keys and non-finite numbers (``nan``, ``inf``) are
    refused, so a typo or an overflow never reaches a run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: the recommender keys, and what a config without them (made before they existed) means
MODEL_DEFAULTS: dict[str, Any] = {"model": "gmf", "layers": 3, "sampler_model": "auto", "optimizer": "adam"}


def _sampler_model(model: str, sampler_model: str) -> str:
    if sampler_model != "auto":
        return sampler_model
    return model if model in ("gmf", "mf") else "mf"


def canonical_model_keys(values: dict[str, Any], sampler: str) -> dict[str, Any]:
    """``values`` (a config's, as JSON) with the recommender keys in one form per run: the learned
    samplers' ``sampler_model`` resolved (static samplers have no model of their own), and each key
    dropped where it has the value of a config written before the keys existed (``model`` gmf,
    ``layers`` 3, a GMF policy or none, ``optimizer`` adam), and the sampler options dropped where they
    have the value of their sampler's runs before they existed (its config's ``legacy_options``). Two
    configs that train the same run compare equal, and an old config equals today's default."""
    from reinforcens.samplers import SAMPLERS, canonical_name

    out = {k: v for k, v in values.items() if k not in MODEL_DEFAULTS}
    legacy_opts = SAMPLERS[canonical_name(sampler)].Config.legacy_options
    if legacy_opts and isinstance(out.get("sampler_options"), dict):
        out["sampler_options"] = {
            k: v for k, v in out["sampler_options"].items() if k not in legacy_opts or legacy_opts[k] != v
        }
    keys = {k: values.get(k, v) for k, v in MODEL_DEFAULTS.items()}
    learned = SAMPLERS[canonical_name(sampler)].learned
    keys["sampler_model"] = _sampler_model(keys["model"], keys["sampler_model"]) if learned else "gmf"
    legacy = {"model": "gmf", "layers": 3, "sampler_model": "gmf", "optimizer": "adam"}
    out.update({k: v for k, v in keys.items() if v != legacy[k]})
    return out


class TrainConfig(StrictModel):
    """Everything that defines a training run (besides the data)."""

    sampler: str = Field("uniform", description="negative sampler name (see `reinforcens train --help`)")
    sampler_options: dict[str, Any] = Field(
        default_factory=dict, description="the sampler's own options (validated by the sampler)"
    )
    model: Literal["gmf", "mf", "lightgcn"] = Field(
        "gmf",
        description="the recommender: 'gmf' (h . (p_u * q_i), He et al. 2017), 'mf' (p_u . q_i) or "
        "'lightgcn' (He et al. 2020: embeddings propagated over the graph of training clicks)",
    )
    layers: int = Field(3, ge=0, description="LightGCN's propagation layers K (lightgcn only)")
    sampler_model: Literal["auto", "gmf", "mf"] = Field(
        "auto",
        description="the own model of the learned samplers (RNS, KBGAN, IRGAN's generator): 'auto' is "
        "the recommender's kind for gmf and mf and 'mf' for lightgcn (started from its propagated "
        "embeddings, it scores as the LightGCN does)",
    )
    dim: int = Field(32, ge=1, description="embedding size K")
    init_std: Annotated[float, Field(gt=0)] | Literal["xavier"] = Field(
        0.1,
        description="initialisation of the embedding tables: the std of a normal, or 'xavier' for "
        "sqrt(2 / (rows + dim)) per table (RecBole's xavier_normal_)",
    )
    batch_size: int = Field(1024, ge=1, description="positives per minibatch")
    optimizer: Literal["adam", "sgd"] = Field(
        "adam",
        description="the recommender's update rule: 'adam' (row-wise Adam for gmf and mf, Adam for "
        "lightgcn) or 'sgd' (plain SGD, as implicit's BPR; usually wants a larger lr); the learned "
        "samplers' own models keep Adam",
    )
    lr: float = Field(1e-3, gt=0, description="learning rate of the recommender's optimizer")
    l2: float = Field(1e-5, ge=0, description="L2 weight on the embedding rows of each batch")
    epochs: int = Field(400, ge=0, description="maximum epochs of the main stage")
    patience: int = Field(10, ge=1, description="evaluations without improvement before stopping")
    min_steps: int = Field(
        1000,
        ge=0,
        description="optimizer steps a stage takes before patience and the below-pretrained rule may "
        "stop it (within the epoch cap): a log of a few batches per epoch is not stopped by the "
        "noise of its first steps",
    )
    eval_every: int = Field(1, ge=1, description="evaluate validation every k epochs")
    negatives_per_positive: int = Field(
        1,
        ge=1,
        description="each positive is repeated this many times per epoch, one negative each",
    )
    init: Literal["auto", "scratch", "pretrained"] = Field(
        "auto",
        description="start the recommender from scratch or from a BPR pretraining of the same model; "
        "'auto' uses the sampler's default (pretrained for learned samplers, scratch for static ones)",
    )
    pretrained: str | None = Field(
        None,
        description="a checkpoint (best.pt of a uniform run) to initialise from, instead of "
        "pretraining inside this run",
    )
    pretrain_epochs: int = Field(400, ge=1, description="maximum epochs of pretraining")
    pretrain_patience: int = Field(10, ge=1, description="early-stop patience of pretraining")
    pretrain_negatives: int = Field(4, ge=1, description="uniform negatives per positive in pretraining")
    below_pretrained_stop: int = Field(
        10,
        ge=0,
        description="stop if after this many trained epochs (warm-up epochs excluded, and not before "
        "min_steps steps) validation AUC is still below the pretrained model's (0: never)",
    )
    record_negatives: int = Field(
        1000, ge=0, description="negatives kept per epoch for analysis (negatives.npz)"
    )
    full_k: int = Field(20, ge=1, description="cut-off of the full-ranking metrics")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of every random stream of the run")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, ...")
    backend: Literal["auto", "numba", "torch"] = Field(
        "auto",
        description="training kernels: 'numba' (compiled, CPU only), 'torch' (any device) or 'auto' "
        "(numba on the CPU when installed, else torch)",
    )

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        from reinforcens.samplers import canonical_name

        return canonical_name(value)

    @classmethod
    def build(cls, **values: Any) -> TrainConfig:
        """Validate, turning pydantic errors into a :class:`ConfigError` naming the key."""
        try:
            cfg = cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            # a union's member tag (``init_std.constrained-float``) is not part of the key
            key = ".".join(str(x) for x in err["loc"] if str(x) in cls.model_fields or str(x).isdigit())
            key = key or ".".join(str(x) for x in err["loc"]) or "?"
            raise ConfigError(f"config key {key!r}: {err['msg']}") from None
        from reinforcens.samplers import sampler_config

        if cfg.layers != 3 and cfg.model != "lightgcn":
            raise ConfigError(f"config key 'layers': only lightgcn has layers, not {cfg.model}")
        if cfg.init == "scratch" and cfg.pretrained:
            raise ConfigError("config keys 'init' and 'pretrained': init 'scratch' ignores the checkpoint")
        resolved = sampler_config(cfg.sampler, cfg.sampler_options).model_dump(mode="json")
        cfg = cfg.model_copy(update={"sampler_options": resolved})
        warmup = resolved.get("warmup", 0)
        if warmup and cfg.resolved_init() != "pretrained":
            raise ConfigError(
                "config key 'sampler_options.warmup': a warm-up trains the sampler against a frozen "
                "recommender, which needs a pretrained one (init 'pretrained')"
            )
        if warmup and warmup >= cfg.epochs:
            raise ConfigError(
                f"config key 'sampler_options.warmup': {warmup} warm-up epochs leave none of the "
                f"{cfg.epochs} epochs to train the recommender"
            )
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: cannot read config (not a JSON object)")
        try:
            return cls.build(**values)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)

    def resolved_sampler_model(self) -> str:
        """The kind of a learned sampler's own model (see ``sampler_model``)."""
        return _sampler_model(self.model, self.sampler_model)

    def resolved_init(self) -> str:
        from reinforcens.samplers import SAMPLERS

        if self.init != "auto":
            return self.init
        if self.pretrained:  # a checkpoint to start from means "start from it"
            return "pretrained"
        return SAMPLERS[self.sampler].default_init
