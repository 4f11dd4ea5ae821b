"""The negative-sampler interface that every sampler, static or learned, implements.

The trainer calls, per minibatch of positives ``(users, positives)``:

1. ``negatives = sampler.sample(users, positives, recommender)``: one negative item per positive, plus
   whatever a learned sampler needs for its update (log-probabilities, candidates);
2. the recommender's BPR step on ``(users, positives, negatives.items)``;
3. ``sampler.update(users, positives, negatives, recommender, neg_scores)`` with the recommender's
   (pre-step, detached) scores of the negatives: a policy-gradient step for learned samplers, nothing for
   static ones. It returns numbers to log.

and ``epoch_end()`` after each epoch (reward baselines and other state kept across epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from reinforcens.config import StrictModel
from reinforcens.models.base import Recommender
from reinforcens.ops.base import SoftmaxChoice
from reinforcens.training_data import TrainingData


class SamplerConfig(StrictModel):
    """Options of a sampler; each sampler subclasses this with its own fields."""

    #: options added after runs of the sampler were made, with the value that trains those runs: at
    #: that value an option is left out of a run's identity (:func:`reinforcens.config.canonical_model_keys`),
    #: so that the runs made before it existed keep their keys and resume
    legacy_options: ClassVar[dict[str, Any]] = {}


@dataclass
class Mixture:
    """A synthetic negative (MixGCF): an embedding mixed from item rows, not an item of the catalogue.

    For every layer ``h`` of the recommender (:meth:`reinforcens.models.base.Recommender.layer_tables`:
    LightGCN's ``E^(0) .. E^(K)``; one layer, the item table, for GMF and MF) the negative's layer
    embedding is ``sum_c weights[b, h, c] * E^(h)[items[b, h, c]]``, and its item embedding is the
    recommender's pooling of the layers (LightGCN: their mean). The BPR step differentiates through
    the mixture into every row it uses.

    Attributes
    ----------
    items : torch.Tensor of int64, shape (B, H, C)
        The rows mixed in each layer (they may include the positive).
    weights : torch.Tensor of float, shape (B, H, C)
        Their weights (fixed: no gradient flows into them).
    """

    items: torch.Tensor
    weights: torch.Tensor


@dataclass
class Negatives:
    """The output of :meth:`NegativeSampler.sample`.

    Attributes
    ----------
    items : torch.Tensor of int64, shape (B,)
        One negative item per positive.
    log_probs : torch.Tensor or None
        For learned samplers: ``log pi(j|u)``. The built-in learned samplers compute their policy gradient
        by hand from ``policy`` and store plain values here; a sampler that sets a tensor with autograd
        history (and no ``policy``) is updated through autograd.
    candidates : torch.Tensor or None
        (B, N) the candidates the negative was chosen from (DNS and the learned samplers).
    policy : SoftmaxChoice or None
        A learned sampler's draw: the log-softmax over the candidates, the choice and, on the torch
        backend, the policy's rows (:class:`reinforcens.ops.SoftmaxChoice`).
    exposed : torch.Tensor of bool or None
        (B,) whether each negative is an exposed-unclicked item of its user, where the sampler knows
        it without a lookup (EBPR; the RNS family, from its candidates' exposure flags).
    fallback : torch.Tensor of bool or None
        (B,) BPR-EN: the negatives drawn uniformly because the user has no exposure.
    mixture : Mixture or None
        A synthetic negative (MixGCF): the BPR step trains against the mixed embedding, and ``items``
        holds the real item the sampler reports for it (for logs and false-negative rates).
    """

    items: torch.Tensor
    log_probs: torch.Tensor | None = None
    candidates: torch.Tensor | None = None
    policy: SoftmaxChoice | None = None
    exposed: torch.Tensor | None = None
    fallback: torch.Tensor | None = None
    mixture: Mixture | None = None


@dataclass(frozen=True)
class SamplerContext:
    """The recommender's settings a learned sampler copies (embedding size, learning rate, L2, and the
    initialisation of its tables when it does not start from a pretrained model)."""

    dim: int = 32
    lr: float = 1e-3
    l2: float = 1e-5
    init_std: float | str = 0.1
    #: the kind of a learned sampler's own model (``gmf`` or ``mf``: the fused REINFORCE step)
    model: str = "gmf"


class NegativeSampler:
    """Base class of all negative samplers.

    Subclasses set :attr:`name`, :attr:`Config` and override :meth:`sample`; learned samplers also
    override :meth:`update`, :meth:`epoch_end` and the state methods.

    Parameters
    ----------
    config
        The sampler's validated options.
    data
        The training data on the training device.
    generator
        The random stream of this sampler (seeded by the trainer).
    context
        The recommender's settings, for samplers with a model of their own.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[SamplerConfig]] = SamplerConfig
    #: "scratch" or "pretrained": how the recommender starts when the run's ``init`` is "auto"
    default_init: ClassVar[str] = "scratch"
    learned: ClassVar[bool] = False
    #: display name in tables (the paper's); ``{model}`` stands for the recommender's label
    #: (:func:`reinforcens.samplers.method_label` fills it in)
    label: ClassVar[str] = ""
    #: one line for ``reinforcens train --help``: what the sampler draws, and its paper
    summary: ClassVar[str] = ""
    #: other names that select this sampler (lower case, e.g. ``bpr-dns``)
    aliases: ClassVar[tuple[str, ...]] = ()
    #: options that make the sampler what it is: options given for all methods of an experiment
    #: leave them alone (e.g. ``--alpha`` tunes RNS and must not turn KBGAN, whose alpha is 0, into RNS)
    defining_options: ClassVar[tuple[str, ...]] = ()
    #: position among the samplers of the paper's Table 2 (``None``: not in it)
    paper_order: ClassVar[int | None] = None
    #: the options the paper's grid searches for this sampler (``reinforcens tune``), with their values
    tune_grid: ClassVar[dict[str, tuple[float, ...]]] = {}

    def __init__(
        self,
        config: SamplerConfig,
        data: TrainingData,
        generator: torch.Generator,
        context: SamplerContext | None = None,
    ):
        self.config = config
        self.data = data
        self.generator = generator
        self.context = context or SamplerContext()

    def sample(self, users: torch.Tensor, positives: torch.Tensor, recommender: Recommender) -> Negatives:
        raise NotImplementedError

    def update(
        self,
        users: torch.Tensor,
        positives: torch.Tensor,
        negatives: Negatives,
        recommender: Recommender,
        neg_scores: torch.Tensor,
    ) -> dict[str, float]:
        return {}

    def epoch_end(self) -> dict[str, float]:
        return {}

    def init_from_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        """Initialise a learned sampler's model from a pretrained recommender's effective tables (the
        state of a GMF: :meth:`reinforcens.models.base.Recommender.dot_state`; no-op if static)."""

    def ranking_model(self, recommender: Recommender) -> Recommender:
        """The model that ranks at evaluation (the recommender, except for IRGAN)."""
        return recommender

    @property
    def warmup_epochs(self) -> int:
        """Epochs at the start of the stage in which the sampler learns but the recommender does not
        train on its negatives (0 but for a learned sampler that asks for a warm-up)."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def model_state_dict(self) -> dict[str, Any]:
        """The part of :meth:`state_dict` that the trained model needs (its ranking model, see
        :meth:`ranking_model`): kept with the best epoch (``best.pt``) and loaded for evaluation.

        All of it by default. A sampler whose state only steers training (SRNS's memory and score
        records) returns ``{}``, so that the best state neither copies nor writes it; ``last.pt`` keeps
        the whole :meth:`state_dict` for resuming.
        """
        return self.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
