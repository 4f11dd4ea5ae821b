"""What a prepared dataset's exposure data looks like as a source of negatives, before any training.

:func:`diagnose` measures, from the training split and the validation lists only:

- coverage: the share of users with at least one exposed-but-unclicked training item, and the number
  of such exposures per training click;
- popularity: the mean training-click count of exposed-unclicked items against that of uniform
  candidates (items the same user did not click), pair for pair;
- ranking: the validation list AUC of the score "number of users to whom the item was exposed but not
  clicked in training" (``exposure_count``), against ItemPop and chance (0.5); and of the per-user
  indicator "this user was shown this item in training and did not click it" (``user_exposed``);
- re-exposure: among the items shown in users' validation sessions, the click rate of those the user had
  already skipped in training against that of items new to the user.

Exposure-based samplers (BPR-EN, EBPR, RNS) treat exposed-unclicked items as negatives. If those items
rank held-out clicks *above* random ones (``exposure_count`` AUC above 0.5), or are clicked at least as
often as new items when shown again, the exposure data says "shown", not "disliked", and negatives drawn
from it may hurt: :func:`diagnose` returns (and the command prints) a plain warning then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reinforcens.data.split import CLICKED, EXPOSED
from reinforcens.evaluation import ItemPop, evaluate_lists

#: AUC margin above chance at which exposed-unclicked counts count as a positive signal
AUC_MARGIN = 0.01


class _UserExposedScorer:
    """Score 1 for items the user was shown in training and did not click, else 0."""

    def __init__(self, exposures):
        self.exposures = exposures

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.exposures.contains(users[:, None], items).astype(np.float64)

    def score_all(self, users: np.ndarray) -> np.ndarray:  # pragma: no cover - not used
        return np.asarray(self.exposures.to_csr()[users].todense(), dtype=np.float64)


def diagnose(data) -> dict[str, Any]:
    """Measure the exposure data of a prepared dataset (see the module docstring).

    Parameters
    ----------
    data
        A :class:`~reinforcens.data.prepared.PreparedDataset` or its directory.

    Returns
    -------
    dict
        The measurements, and ``warnings``: a list of plain-language warnings (empty if none).
    """
    from reinforcens.data.prepared import PreparedDataset, load_prepared

    if not isinstance(data, PreparedDataset):
        data = load_prepared(data)
    clicks, exposures = data.train_clicks, data.train_exposures
    n_users = data.n_users
    exp_counts = exposures.counts()
    click_counts = clicks.counts()
    has_exp = exp_counts > 0
    pop = data.item_popularity().astype(np.float64)

    # popularity: exposed-unclicked pairs against uniform non-clicked candidates of the same users
    exp_pop = pop[exposures.indices]
    clicked_pop = (
        np.add.reduceat(pop[clicks.indices], clicks.indptr[:-1]) if clicks.nnz else np.zeros(n_users)
    )
    clicked_pop = np.where(click_counts > 0, clicked_pop, 0.0)
    uniform_pop_user = (pop.sum() - clicked_pop) / np.maximum(data.n_items - click_counts, 1)
    uniform_pop = float(np.repeat(uniform_pop_user, exp_counts).mean()) if exposures.nnz else float("nan")
    exposed_pop = float(exp_pop.mean()) if exposures.nnz else float("nan")

    # ranking of validation clicks
    valid = data.valid
    count_score = np.bincount(exposures.indices, minlength=data.n_items).astype(np.float64)
    count_metrics = evaluate_lists(ItemPop(count_score), valid)
    pop_metrics = evaluate_lists(ItemPop.fit(data), valid)
    user_metrics = evaluate_lists(_UserExposedScorer(exposures), valid)

    # re-exposure: items shown in the validation session (clicked or not), skipped before or new
    shown = (valid.kind == CLICKED) | (valid.kind == EXPOSED)
    users_b = np.broadcast_to(valid.users[:, None], valid.items.shape)
    items_ok = np.maximum(valid.items, 0)
    skipped = exposures.contains(users_b, items_ok) & shown
    new = shown & ~skipped & ~clicks.contains(users_b, items_ok)
    clicked = valid.kind == CLICKED
    rate_skipped = float(clicked[skipped].mean()) if skipped.any() else float("nan")
    rate_new = float(clicked[new].mean()) if new.any() else float("nan")

    out: dict[str, Any] = {
        "users": n_users,
        "items": data.n_items,
        "train_clicks": clicks.nnz,
        "train_exposures": exposures.nnz,
        "users_with_exposures": int(has_exp.sum()),
        "share_users_with_exposures": float(has_exp.mean()) if n_users else float("nan"),
        "exposures_per_click": exposures.nnz / max(clicks.nnz, 1),
        "median_exposures_per_click_per_user": float(
            np.median(exp_counts[click_counts > 0] / click_counts[click_counts > 0])
        )
        if (click_counts > 0).any()
        else float("nan"),
        "mean_popularity_exposed": exposed_pop,
        "mean_popularity_uniform": uniform_pop,
        "popularity_ratio": exposed_pop / uniform_pop if uniform_pop > 0 else float("nan"),
        "valid_auc_exposure_count": count_metrics["auc"],
        "valid_ndcg_exposure_count": count_metrics["ndcg"],
        "valid_auc_itempop": pop_metrics["auc"],
        "valid_ndcg_itempop": pop_metrics["ndcg"],
        "valid_auc_user_exposed": user_metrics["auc"],
        "valid_shown_items_skipped_before": int(skipped.sum()),
        "valid_shown_items_new": int(new.sum()),
        "valid_click_rate_skipped_before": rate_skipped,
        "valid_click_rate_new": rate_new,
        "reexposure_lift": rate_skipped / rate_new if rate_new > 0 else float("nan"),
    }
    out["warnings"] = _warnings(out)
    return out


def _warnings(d: dict[str, Any]) -> list[str]:
    warns = []
    if d["train_exposures"] == 0:
        return [
            "there is no exposed-but-unclicked item in training: exposure-based samplers fall back "
            "to uniform negatives and cannot help"
        ]
    if d["share_users_with_exposures"] < 0.5:
        warns.append(
            f"only {d['share_users_with_exposures']:.0%} of users have exposed-but-unclicked items: "
            "exposure-based samplers fall back to uniform negatives for the others"
        )
    auc = d["valid_auc_exposure_count"]
    if auc == auc and auc > 0.5 + AUC_MARGIN:
        warns.append(
            f"exposed-but-unclicked items look MORE likely to be clicked than random ones: ranking "
            f"items by how often they were exposed but not clicked in training puts held-out "
            f"validation clicks above the other list items (AUC {auc:.3f} > 0.5; ItemPop "
            f"{d['valid_auc_itempop']:.3f}). Negatives drawn from exposures (BPR-EN, EBPR, RNS) may "
            "then push down items users do click; compare them with uniform negatives before relying "
            "on them"
        )
    lift = d["reexposure_lift"]
    if lift == lift and lift >= 1.0:
        warns.append(
            f"items a user skipped in training are clicked at least as often as new items when shown "
            f"again in validation (click rate {d['valid_click_rate_skipped_before']:.3f} vs "
            f"{d['valid_click_rate_new']:.3f}): a skip is no evidence of dislike in this data"
        )
    return warns


def format_diagnosis(d: dict[str, Any], path: str | Path | None = None) -> str:
    """The diagnosis as plain text."""
    lines = [f"exposure data of {path}" if path else "exposure data"]
    lines += [
        f"  users with exposed-but-unclicked items   {d['users_with_exposures']:,} of {d['users']:,} "
        f"({d['share_users_with_exposures']:.1%})",
        f"  exposed-unclicked per training click     {d['exposures_per_click']:.2f} overall, "
        f"median per user {d['median_exposures_per_click_per_user']:.2f}",
        f"  mean popularity (training clicks) of exposed-unclicked items {d['mean_popularity_exposed']:.1f} "
        f"vs uniform candidates {d['mean_popularity_uniform']:.1f} (x{d['popularity_ratio']:.2f})",
        "  validation list AUC of simple scores (0.5 = random):",
        f"    exposed-but-unclicked count (all users)  {d['valid_auc_exposure_count']:.4f}",
        f"    exposed-but-unclicked to this user       {d['valid_auc_user_exposed']:.4f}",
        f"    ItemPop (training clicks)                {d['valid_auc_itempop']:.4f}",
        f"  click rate of items shown in validation: skipped before "
        f"{d['valid_click_rate_skipped_before']:.4f} ({d['valid_shown_items_skipped_before']:,} items), "
        f"new to the user {d['valid_click_rate_new']:.4f} ({d['valid_shown_items_new']:,} items), "
        f"lift {d['reexposure_lift']:.2f}",
    ]
    if d["warnings"]:
        lines.append("")
        lines += [f"WARNING: {w}." for w in d["warnings"]]
    else:
        lines.append("")
        lines.append(
            "no warning: exposed-but-unclicked items do not look more likely to be clicked than random ones"
        )
    return "\n".join(lines)
