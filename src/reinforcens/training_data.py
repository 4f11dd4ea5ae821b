"""Device-side training data: positives, per-user click/exposure sets and vectorized samplers.

Membership tests are binary searches over sorted ``user * n_items + item`` keys (``torch.searchsorted``),
so drawing negatives with rejection of positives needs no per-user Python work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reinforcens.data.prepared import PreparedDataset
from reinforcens.errors import DataError


def _contains(sorted_keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros(query.shape, dtype=torch.bool, device=query.device)
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == query


@dataclass
class TrainingData:
    """Tensors of one prepared dataset on one device.

    Attributes
    ----------
    pos_users, pos_items : torch.Tensor
        The training clicks, one entry per positive pair.
    click_keys, exposure_keys : torch.Tensor
        Sorted ``user * n_items + item`` keys of training clicks and of exposed-unclicked pairs.
    exp_indptr, exp_indices : torch.Tensor
        Per-user CSR of exposed-unclicked items.
    """

    n_users: int
    n_items: int
    pos_users: torch.Tensor
    pos_items: torch.Tensor
    click_keys: torch.Tensor
    click_counts: torch.Tensor
    exposure_keys: torch.Tensor
    exp_indptr: torch.Tensor
    exp_indices: torch.Tensor
    item_clicks: torch.Tensor

    @classmethod
    def from_prepared(
        cls, data: PreparedDataset, device: str | torch.device = "cpu"
    ) -> TrainingData:
        clicks, exposures = data.train_clicks, data.train_exposures
        full = np.flatnonzero(clicks.counts() >= data.n_items)
        if full.size:
            raise DataError(
                f"{full.size} user(s) clicked every item in training, so no negative exists for "
                f"them (first: user {data.user_ids[full[0]]!r})",
                data.path,
            )

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a, dtype=np.int64), device=device)

        return cls(
            n_users=data.n_users,
            n_items=data.n_items,
            pos_users=t(clicks.users()),
            pos_items=t(clicks.indices),
            click_keys=t(clicks.keys()),
            click_counts=t(clicks.counts()),
            exposure_keys=t(exposures.keys()),
            exp_indptr=t(exposures.indptr),
            exp_indices=t(exposures.indices),
            item_clicks=t(data.item_popularity()),
        )

    @property
    def device(self) -> torch.device:
        return self.pos_users.device

    @property
    def n_positives(self) -> int:
        return int(self.pos_users.numel())

    def exposure_counts(self, users: torch.Tensor) -> torch.Tensor:
        return self.exp_indptr[users + 1] - self.exp_indptr[users]

    def is_clicked(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) is a training click; ``users`` broadcasts against ``items``."""
        return _contains(self.click_keys, users * self.n_items + items)

    def is_exposed(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) was shown in training and not clicked."""
        return _contains(self.exposure_keys, users * self.n_items + items)

    def sample_uniform(
        self,
        users: torch.Tensor,
        n: int,
        generator: torch.Generator,
        exclude_exposed: bool = False,
        max_rounds: int = 100,
    ) -> torch.Tensor:
        """Items drawn uniformly (with replacement) among those each user did not click.

        Parameters
        ----------
        users
            Shape (B,).
        n
            Draws per user; result shape (B, n).
        exclude_exposed
            Also reject the user's exposed-unclicked items. Users for whom nothing is left fall back
            to non-clicked items.
        """
        u = users.unsqueeze(1).expand(-1, n)
        items = torch.randint(0, self.n_items, u.shape, device=users.device, generator=generator)
        bad = self._rejected(u, items, exclude_exposed)
        for _ in range(max_rounds):
            if not bool(bad.any()):
                return items
            k = int(bad.sum())
            items[bad] = torch.randint(
                0, self.n_items, (k,), device=users.device, generator=generator
            )
            bad = self._rejected(u, items, exclude_exposed)
        if bool(bad.any()):
            self._exact_fill(u, items, bad, generator, exclude_exposed)
        return items

    def _rejected(
        self, u: torch.Tensor, items: torch.Tensor, exclude_exposed: bool
    ) -> torch.Tensor:
        bad = self.is_clicked(u, items)
        if exclude_exposed:
            exposed = self.is_exposed(u, items)
            # users with no unexposed, unclicked item left keep exposed candidates
            room = self.n_items - self.click_counts[u] - self.exposure_counts(u)
            bad |= exposed & (room > 0)
        return bad

    def _exact_fill(self, u, items, bad, generator, exclude_exposed) -> None:
        """Rare fallback for users with almost every item clicked: sample from the complement."""
        for user in torch.unique(u[bad]).tolist():
            slots = bad & (u == user)
            blocked = (
                self.click_keys[
                    (self.click_keys >= user * self.n_items)
                    & (self.click_keys < (user + 1) * self.n_items)
                ]
                - user * self.n_items
            )
            if exclude_exposed:
                lo, hi = int(self.exp_indptr[user]), int(self.exp_indptr[user + 1])
                more = self.exp_indices[lo:hi]
                if self.n_items - blocked.numel() - more.numel() > 0:
                    blocked = torch.cat([blocked, more])
            allowed = torch.ones(self.n_items, dtype=torch.bool, device=u.device)
            allowed[blocked] = False
            choices = torch.nonzero(allowed).squeeze(1)
            pick = torch.randint(
                0, choices.numel(), (int(slots.sum()),), device=u.device, generator=generator
            )
            items[slots] = choices[pick]

    def sample_exposed(
        self, users: torch.Tensor, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items drawn uniformly (with replacement) from each user's exposed-unclicked items.

        Returns
        -------
        items : torch.Tensor of shape (B, n)
            ``-1`` for users without exposures.
        has : torch.Tensor of bool, shape (B,)
            Whether the user has any exposure.
        """
        start = self.exp_indptr[users]
        count = self.exp_indptr[users + 1] - start
        has = count > 0
        r = torch.rand((users.numel(), n), device=users.device, generator=generator)
        offset = (r * count.unsqueeze(1)).long().clamp_(max=(count - 1).clamp(min=0).unsqueeze(1))
        idx = (start.unsqueeze(1) + offset).clamp_(max=max(self.exp_indices.numel() - 1, 0))
        if self.exp_indices.numel() == 0:
            return torch.full_like(offset, -1), has
        items = torch.where(has.unsqueeze(1), self.exp_indices[idx], torch.full_like(idx, -1))
        return items, has

    def batches(self, batch_size: int, generator: torch.Generator, repeat: int = 1):
        """Shuffled minibatches of (users, positive items); each positive ``repeat`` times."""
        n = self.n_positives * repeat
        perm = torch.randperm(n, device=self.device, generator=generator) % self.n_positives
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            yield self.pos_users[idx], self.pos_items[idx]
