"""reinforcens: learned negative samplers that use exposure data (RNS and its baselines)."""

from reinforcens.errors import ConfigError, DataError, ReinforcensError

__version__ = "0.1.0"


def load_run(run_dir, data=None, device: str = "cpu"):
    """A finished run as a recommender in raw ids (:class:`reinforcens.recommend.TrainedRecommender`):
    ``load_run(RUN).recommend(raw_user_ids, k=20, exclude_seen=True)``, ``.similar_items(raw_item_ids,
    k)``, ``.export(DIR)``; ``data`` overrides the prepared dataset its ``data.json`` records."""
    from reinforcens.recommend import TrainedRecommender

    return TrainedRecommender.load(run_dir, data, device)


__all__ = ["ConfigError", "DataError", "ReinforcensError", "__version__", "load_run"]
