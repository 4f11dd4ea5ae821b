"""Compiled CPU kernels of the training hot path (numba).

Each kernel does in one pass over a minibatch what the torch path does in a few dozen eager operations:
draw negatives, score candidates, compute the BPR or REINFORCE gradients and apply the row-wise Adam
update (or, for BPR, plain SGD) of :mod:`reinforcens.optim` to the rows of the batch only. They compute
the same quantities as the torch path (tested against it), up to floating-point summation order.

Random numbers are counter-based: draw ``c`` of a call with seed ``s`` is ``splitmix64(s + c * phi)``, so
a result depends only on the seed (drawn by the caller from its ``torch.Generator``) and the position of
the draw, never on the order in which rows are processed.

All arrays are numpy views of CPU tensors (weights, moments), updated in place. Row merging: the
gradients of a row that occurs several times in a batch are summed into one slot before the update;
a ``slot`` array (one int64 per table row, ``-1`` when unused) maps a row to its slot, ``rows`` and
``grads`` are the caller's scratch buffers of at least as many slots as the batch has row lookups, and
every slot entry is reset to ``-1`` before a kernel returns.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Fast-math flags that allow vectorizing reductions but keep NaN and infinity semantics
_FM = {"reassoc", "contract", "nsz", "arcp"}
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}

_PHI = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U2 = np.uint64(2)
_U11 = np.uint64(11)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)
_U32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
#: the draws below ``n`` need ``n`` below this (see :func:`_below`)
MAX_DRAW_BOUND = 1 << 32


# ------------------------------------------------------------------------------- random numbers
@njit(inline="always", **_JIT)
def _rand64(seed, counter):
    z = np.uint64(seed) + np.uint64(counter) * _PHI
    z = (z ^ (z >> _U30)) * _MIX1
    z = (z ^ (z >> _U27)) * _MIX2
    return z ^ (z >> _U31)


@njit(inline="always", **_JIT)
def _below(seed, counter, n):
    """Uniform in ``[0, n)`` for ``n < 2**32``: ``floor(r * n / 2**62)`` of a 62-bit draw ``r`` (bias
    below ``n / 2**62``).

    Lemire's multiply-shift instead of ``r mod n``: the product is taken from the two 32-bit halves of
    ``r``, ``(r_hi * n + (r_lo * n >> 32)) >> 30``, which is exactly the floor above (``r_hi * n <
    2**62``: no overflow) and costs two multiplications instead of a 64-bit division (BENCHMARKS.md,
    "Draws without division"). Every ``n`` the kernels draw below is a count of items, and
    :meth:`reinforcens.ops.numba_ops.NumbaOps.check_catalogue` refuses catalogues of ``2**32`` items or
    more, so no branch for larger ``n`` sits in the draw loops.
    """
    r = _rand64(seed, counter) >> _U2
    m = np.uint64(n)
    return np.int64(((r >> _U32) * m + (((r & _LOW32) * m) >> _U32)) >> _U30)


@njit(inline="always", **_JIT)
def _unit(seed, counter):
    """Uniform float64 in ``[0, 1)``."""
    return np.float64(_rand64(seed, counter) >> _U11) * (1.0 / 9007199254740992.0)


def random_below(seed: int, counters: np.ndarray, n: int) -> np.ndarray:
    """The kernels' draws ``_below(seed, counter, n)`` for an array of counters (for tests)."""
    if not 0 < n < MAX_DRAW_BOUND:
        raise ValueError(f"draws below n need 0 < n < 2**32, got {n}")
    return _below_many(seed, np.asarray(counters, dtype=np.int64), n)


@njit(**_JIT)
def _below_many(seed, counters, n):
    out = np.empty(counters.shape[0], np.int64)
    for t in range(counters.shape[0]):
        out[t] = _below(seed, counters[t], n)
    return out


# ---------------------------------------------------------------------------------- searching
@njit(inline="always", **_JIT)
def _count_le(keys, lo, hi, q):
    """Number of ``keys[lo:hi]`` (sorted) that are ``<= q``; a branch-free binary search."""
    base = lo
    n = hi - lo
    while n > 1:
        half = n >> 1
        if keys[base + half - 1] <= q:
            base += half
        n -= half
    if n == 1 and keys[base] <= q:
        base += 1
    return base - lo


@njit(inline="always", **_JIT)
def _in_segment(keys, lo, hi, q):
    k = lo + _count_le(keys, lo, hi, q)
    return k > lo and keys[k - 1] == q


@njit(**_JIT)
def hash_build(keys, bits):
    """Open-addressing hash set (linear probing) of non-negative int64 ``keys`` in ``2**bits`` slots."""
    size = 1 << bits
    mask = size - 1
    shift = np.uint64(64 - bits)
    table = np.full(size, -1, np.int64)
    for t in range(keys.shape[0]):
        key = keys[t]
        h = np.int64((np.uint64(key) * _PHI) >> shift)
        while table[h] != -1 and table[h] != key:
            h = (h + 1) & mask
        table[h] = key
    return table


@njit(inline="always", **_JIT)
def _hash_has(table, shift, key):
    mask = table.shape[0] - 1
    h = np.int64((np.uint64(key) * _PHI) >> shift)
    while True:
        v = table[h]
        if v == key:
            return True
        if v == -1:
            return False
        h = (h + 1) & mask


@njit(**_JIT)
def contains_segments(keys, indptr, users, items, n_items):
    """Whether ``users[t] * n_items + items[t]`` is among the user's keys, for 1-D aligned arrays."""
    out = np.zeros(users.shape[0], np.bool_)
    for t in range(users.shape[0]):
        u = users[t]
        out[t] = _in_segment(keys, indptr[u], indptr[u + 1], u * n_items + items[t])
    return out


# ---------------------------------------------------------------------------------------- sampling
@njit(inline="always", **_JIT)
def _gap_draw(gaps, lo, hi, free, seed, counter):
    """The item of a uniform rank among a user's allowed items, from the row's gaps ``gaps[lo:hi]``
    (see ``training_data._row_gaps``)."""
    k = _below(seed, counter, free)
    return k + _count_le(gaps, lo, hi, k)


@njit(parallel=True, **_JIT)
def sample_uniform(users, n, gaps, indptr, free, n_items, table, shift, seed):
    """``n`` uniform draws per user among the items not in the user's blocked set.

    ``gaps``/``indptr``/``free`` describe the blocked set (row gaps, ``training_data._row_gaps``); when
    ``table`` (a hash set of the blocked keys, or empty) is given and at least half the items are
    allowed, a draw is a uniform item rejected while blocked (at most 32 tries, then the exact gap
    draw: either way uniform). Draw ``c`` of row ``b`` uses counters ``64 * (b * n + c) + 0..63``.

    Rows run in parallel in chunks of 64. A chunk first reads the hash slot of every first try (one
    loop of independent loads, so their cache misses overlap), then draws: the probes, whose early
    exits would otherwise wait for one miss after the other, mostly find their slot in the cache.
    """
    b_count = users.shape[0]
    out = np.empty((b_count, n), np.int64)
    reject = table.shape[0] > 0
    chunks = (b_count + 63) >> 6
    sink = np.zeros(chunks, np.int64)  # keeps the loads of the first pass
    for chunk in prange(chunks):
        first = chunk << 6
        last = min(b_count, first + 64)
        if reject:
            acc = np.int64(0)
            for b in range(first, last):
                base = users[b] * n_items
                for c in range(n):
                    key = base + _below(seed, 64 * (b * n + c), n_items)
                    acc += table[np.int64((np.uint64(key) * _PHI) >> shift)]
            sink[chunk] = acc
        for b in range(first, last):
            u = users[b]
            lo = indptr[u]
            hi = indptr[u + 1]
            f = free[u]
            base = u * n_items
            rej = reject and 2 * f >= n_items
            for c in range(n):
                ctr = 64 * (b * n + c)
                item = -1
                if rej:
                    for a in range(32):
                        j = _below(seed, ctr + a, n_items)
                        if not _hash_has(table, shift, base + j):
                            item = j
                            break
                if item < 0:
                    item = _gap_draw(gaps, lo, hi, f, seed, ctr + 63)
                out[b, c] = item
    return out


@njit(inline="always", **_JIT)
def _set_bits(bitmap, gaps, lo, hi):
    """Set the bits of a row's blocked items (the row gaps ``gaps[lo:hi]``: item ``gaps[t] + t - lo``)."""
    for t in range(lo, hi):
        j = gaps[t] + (t - lo)
        bitmap[j >> 6] |= np.uint64(1) << np.uint64(j & 63)


@njit(inline="always", **_JIT)
def _clear_bits(bitmap, gaps, lo, hi):
    """Clear what :func:`_set_bits` set: word by word for a few blocked items, the whole bitmap (one
    sequential write, cheaper than a scattered write per item) once they are an eighth of its words."""
    if 8 * (hi - lo) >= bitmap.shape[0]:
        bitmap[:] = 0
    else:
        for t in range(lo, hi):
            bitmap[(gaps[t] + (t - lo)) >> 6] = np.uint64(0)


@njit(inline="always", **_JIT)
def _first_clear(bitmap, seed, ctr, n_items):
    """The first of 32 uniform items (counters ``ctr .. ctr + 31``) whose bit is clear; -1 if none."""
    for a in range(32):
        j = _below(seed, ctr + a, n_items)
        if (bitmap[j >> 6] >> np.uint64(j & 63)) & np.uint64(1) == 0:
            return j
    return -1


@njit(inline="always", **_JIT)
def _bitmap_row(bitmap, u, gaps, indptr, free, n_items):
    """Start user ``u``'s row: its segment ``lo, hi`` of the row gaps, free count, key base
    (``u * n_items``) and whether it draws by rejection (at least half its items free), its bits set in
    ``bitmap`` if so."""
    lo = indptr[u]
    hi = indptr[u + 1]
    f = free[u]
    base = u * n_items
    rej = 2 * f >= n_items
    if rej:
        _set_bits(bitmap, gaps, lo, hi)
    return lo, hi, f, base, rej


@njit(inline="always", **_JIT)
def _bitmap_draw(bitmap, rej, gaps, lo, hi, free, seed, ctr, n_items):
    """One uniform draw of a row: :func:`_first_clear` if ``rej`` (the row's bits are set), else or if
    all 32 tries are blocked the exact gap draw (counter ``ctr + 63``)."""
    item = _first_clear(bitmap, seed, ctr, n_items) if rej else -1
    if item < 0:
        item = _gap_draw(gaps, lo, hi, free, seed, ctr + 63)
    return item


@njit(parallel=True, **_JIT)
def sample_uniform_bitmap(users, n, gaps, indptr, free, n_items, seed):
    """The draws of :func:`sample_uniform` with rejection, but tested against a bitmap of the row's
    blocked items instead of a hash set: the same items for the same seed (a draw is the first of 32
    uniform items that is not blocked, else the exact gap draw, counters as there), and no hash set
    is needed, so the blocked set may be the clicks or the clicks and exposures.

    Each chunk of 64 rows keeps one bitmap of ``n_items`` bits, sets the bits of a row's blocked items
    (from its row gaps), draws, and clears them again (:func:`_clear_bits`), so a draw costs one bit
    test instead of a binary search; worth it for several draws per row (the caller's choice).
    """
    b_count = users.shape[0]
    out = np.empty((b_count, n), np.int64)
    words = (n_items + 63) >> 6
    for chunk in prange((b_count + 63) >> 6):
        bitmap = np.zeros(words, np.uint64)
        for b in range(chunk << 6, min(b_count, (chunk + 1) << 6)):
            u = users[b]
            lo, hi, f, _, rej = _bitmap_row(bitmap, u, gaps, indptr, free, n_items)
            for c in range(n):
                ctr = 64 * (b * n + c)
                item = _bitmap_draw(bitmap, rej, gaps, lo, hi, f, seed, ctr, n_items)
                out[b, c] = item
            if rej:
                _clear_bits(bitmap, gaps, lo, hi)
    return out


@njit(**_JIT)
def sample_segments(users, n, keys, indptr, n_items, seed):
    """Uniform draws (with replacement) from each user's segment of sorted ``user * n_items + item``
    keys; ``-1`` for users with an empty segment. Returns items (B, n) and ``has`` (B,)."""
    b_count = users.shape[0]
    out = np.full((b_count, n), -1, np.int64)
    has = np.zeros(b_count, np.bool_)
    for b in range(b_count):
        u = users[b]
        start = indptr[u]
        count = indptr[u + 1] - start
        if count <= 0:
            continue
        has[b] = True
        base = u * n_items
        for c in range(n):
            out[b, c] = keys[start + _below(seed, b * n + c, count)] - base
    return out, has


@njit(parallel=True, **_JIT)
def sample_sets(users, indptr, flat, n, seed):
    """``n`` items per user from the user's set ``flat[indptr[u]:indptr[u + 1]]``: a uniform ``n``-subset
    by Floyd's algorithm where the set holds ``n`` or more items, uniform draws with replacement where
    it holds fewer, ``-1`` where it is empty. Draw ``t`` of row ``b`` uses counter ``b * n + t``.

    Floyd's step ``t`` (``t = 0 .. n - 1``, ``m`` the set's size) draws a rank ``r`` uniform in
    ``[0, m - n + t]`` and keeps ``m - n + t`` instead if ``r`` was drawn before; the ``n`` ranks are a
    uniform ``n``-subset of ``[0, m)``. Returns items (B, n) and the sets' sizes (B,)."""
    b_count = users.shape[0]
    out = np.full((b_count, n), -1, np.int64)
    size = np.zeros(b_count, np.int64)
    for b in prange(b_count):
        u = users[b]
        start = indptr[u]
        m = indptr[u + 1] - start
        size[b] = m
        if m <= 0:
            continue
        if m < n:
            for t in range(n):
                out[b, t] = flat[start + _below(seed, b * n + t, m)]
            continue
        for t in range(n):  # the ranks first, in out[b]
            top = m - n + t
            r = _below(seed, b * n + t, top + 1)
            for s in range(t):
                if out[b, s] == r:
                    r = top
                    break
            out[b, t] = r
        for t in range(n):
            out[b, t] = flat[start + out[b, t]]
    return out, size


@njit(parallel=True, **_JIT)
def candidates(
    users, n, n_exp, gaps, indptr, free, blocked_has_exposure, exp_keys, exp_indptr, n_items, flags, seed
):
    """``n`` candidates per user for a learned sampler, and whether each is an exposed-unclicked item.

    The first ``n - n_exp`` are uniform draws among the items the row gaps ``gaps`` leave free, by the
    rejection of :func:`sample_uniform_bitmap` (same counters); the last ``n_exp`` come from the user's
    exposed-unclicked items (counter ``64 * (b * n + c)``; uniform draws too for users without any).
    ``blocked_has_exposure[u]`` says that user ``u``'s blocked set already excludes their exposures, so a
    uniform draw is never exposed; otherwise it is looked up (only if ``flags``: else uniform draws are
    marked not exposed). Returns ``cands`` (B, n) and ``exposed`` (B, n).
    """
    b_count = users.shape[0]
    cands = np.empty((b_count, n), np.int64)
    exposed = np.zeros((b_count, n), np.bool_)
    words = (n_items + 63) >> 6
    for chunk in prange((b_count + 63) >> 6):
        bitmap = np.zeros(words, np.uint64)
        for b in range(chunk << 6, min(b_count, (chunk + 1) << 6)):
            u = users[b]
            lo, hi, f, base, rej = _bitmap_row(bitmap, u, gaps, indptr, free, n_items)
            es = exp_indptr[u]
            ee = exp_indptr[u + 1]
            check = flags and ee > es and not blocked_has_exposure[u]
            n_uni = n - n_exp if ee > es else n
            for c in range(n):
                ctr = 64 * (b * n + c)
                if c >= n_uni:
                    cands[b, c] = exp_keys[es + _below(seed, ctr, ee - es)] - base
                    exposed[b, c] = True
                    continue
                item = _bitmap_draw(bitmap, rej, gaps, lo, hi, f, seed, ctr, n_items)
                cands[b, c] = item
                if check:
                    exposed[b, c] = _in_segment(exp_keys, es, ee, base + item)
            if rej:
                _clear_bits(bitmap, gaps, lo, hi)
    return cands, exposed


# ------------------------------------------------------------------------------------- row merging
@njit(inline="always", **_JIT)
def _slot(row, slot, rows, grads, n_used):
    """The slot of ``row`` (a new one, zeroed, if the row has none yet)."""
    s = slot[row]
    if s < 0:
        s = n_used
        slot[row] = s
        rows[s] = row
        for k in range(grads.shape[1]):
            grads[s, k] = 0.0
    return s


@njit(inline="always", **_JIT)
def _add_row(row, g, slot, rows, grads, n_used):
    """Add the gradient ``g`` (K,) to ``row``'s slot; returns the new number of used slots."""
    s = _slot(row, slot, rows, grads, n_used)
    for k in range(grads.shape[1]):
        grads[s, k] += g[k]
    return n_used + 1 if s == n_used else n_used


@njit(fastmath=_FM, **_JIT)
def _adam_rows(rows, n_rows, grads, weight, exp_avg, exp_avg_sq, slot, step_size, b1, b2, eps):
    """Adam on the first ``n_rows`` slots (float32 arithmetic, as the torch path's in-place updates)."""
    k_dim = weight.shape[1]
    w1 = np.float32(1.0 - b1)
    w2 = np.float32(1.0 - b2)
    b2 = np.float32(b2)
    eps = np.float32(eps)
    step_size = np.float32(step_size)
    for s in range(n_rows):
        r = rows[s]
        slot[r] = -1
        g = grads[s]
        w = weight[r]
        m = exp_avg[r]
        v = exp_avg_sq[r]
        for k in range(k_dim):
            mk = m[k] + w1 * (g[k] - m[k])
            vk = b2 * v[k] + w2 * g[k] * g[k]
            m[k] = mk
            v[k] = vk
            w[k] -= step_size * mk / (np.sqrt(vk) + eps)


@njit(fastmath=_FM, **_JIT)
def adam_dense(grad, weight, exp_avg, exp_avg_sq, lr, b1, b2, eps, bc1, bc2):
    """Dense Adam of a vector (``h``), as ``reinforcens.ops.torch_ops._step_h``."""
    sq2 = math.sqrt(bc2)
    for k in range(weight.shape[0]):
        g = grad[k]
        m = exp_avg[k] + (1.0 - b1) * (g - exp_avg[k])
        v = b2 * exp_avg_sq[k] + (1.0 - b2) * g * g
        exp_avg[k] = m
        exp_avg_sq[k] = v
        weight[k] -= lr / bc1 * m / (math.sqrt(v) / sq2 + eps)


@njit(fastmath=_FM, **_JIT)
def rowwise_adam(rows_in, grads_in, weight, exp_avg, exp_avg_sq, slot, rows, grads, step_size, b1, b2, eps):
    """Row-wise Adam of one table: sum the gradients of repeated rows (1-D), then update each once."""
    n_used = 0
    for t in range(rows_in.shape[0]):
        n_used = _add_row(rows_in[t], grads_in[t], slot, rows, grads, n_used)
    _adam_rows(rows, n_used, grads, weight, exp_avg, exp_avg_sq, slot, step_size, b1, b2, eps)


@njit(fastmath=_FM, **_JIT)
def _sgd_rows(rows, n_rows, grads, weight, slot, lr):
    """Plain SGD ``w_r -= lr * g_r`` on the first ``n_rows`` slots (float32 arithmetic)."""
    k_dim = weight.shape[1]
    lr = np.float32(lr)
    for s in range(n_rows):
        r = rows[s]
        slot[r] = -1
        g = grads[s]
        w = weight[r]
        for k in range(k_dim):
            w[k] -= lr * g[k]


@njit(fastmath=_FM, **_JIT)
def rowwise_sgd(rows_in, grads_in, weight, slot, rows, grads, lr):
    """Plain SGD of one table: sum the gradients of repeated rows (1-D), then update each once."""
    n_used = 0
    for t in range(rows_in.shape[0]):
        n_used = _add_row(rows_in[t], grads_in[t], slot, rows, grads, n_used)
    _sgd_rows(rows, n_used, grads, weight, slot, lr)


# ------------------------------------------------------------------------------------------- BPR
@njit(parallel=True, fastmath=_FM, **_JIT)
def bpr_adam_step(
    users, pos, neg, user_w, item_w, h, user_m, user_v, item_m, item_v, h_m, h_v,
    user_slot, user_rows, user_grads, item_slot, item_rows, item_grads,
    l2, lr, b1, b2, eps, bc1, bc2, neg_scores, parts,
):  # fmt: skip
    """One BPR step of a GMF with hand-computed gradients and the row-wise Adam update.

    Computes what ``losses.bpr_with_grads`` and ``GMFOptimizer.step_rows`` compute: every gradient from
    the weights before the step, then one Adam update per distinct row and one of ``h``. Writes the
    pre-step negative scores into ``neg_scores`` and returns the summed loss (float64).

    Parallel and deterministic: the scores are computed per row in parallel; then ``parts`` workers
    each own the table rows ``r`` with ``r % parts`` equal to their index, sum those rows' gradients in
    batch order (so the result does not depend on ``parts``) into their own region of the scratch
    buffers (``parts * B`` user and ``parts * 2B`` item slots), and update them.
    """
    b_count = users.shape[0]
    k_dim = h.shape[0]
    losses = np.empty(b_count, np.float64)
    # per-instance gradients of p_u, q_i and q_j, and terms of h's gradient: one gather per row
    g_user = np.empty((b_count, k_dim), np.float32)
    g_pos = np.empty((b_count, k_dim), np.float32)
    g_neg = np.empty((b_count, k_dim), np.float32)
    g_h = np.empty((b_count, k_dim), np.float32)
    l2f = np.float32(l2)
    for b in prange(b_count):
        u = users[b]
        i = pos[b]
        j = neg[b]
        x = np.float32(0.0)
        sj = np.float32(0.0)
        sq = np.float32(0.0)
        for k in range(k_dim):
            ph = user_w[u, k] * h[k]
            x += ph * (item_w[i, k] - item_w[j, k])
            sj += ph * item_w[j, k]
            sq += user_w[u, k] * user_w[u, k] + item_w[i, k] * item_w[i, k] + item_w[j, k] * item_w[j, k]
        neg_scores[b] = sj
        # loss softplus(-x) and s = sigmoid(-x), both stable
        z = -float(x)
        if z > 0:
            losses[b] = z + math.log1p(math.exp(-z)) + 0.5 * l2 * float(sq)
            s = np.float32(1.0 / (1.0 + math.exp(-z)))
        else:
            ez = math.exp(z)
            losses[b] = math.log1p(ez) + 0.5 * l2 * float(sq)
            s = np.float32(ez / (1.0 + ez))
        for k in range(k_dim):
            pu = user_w[u, k]
            d = item_w[i, k] - item_w[j, k]
            t = s * h[k]
            g_user[b, k] = l2f * pu - t * d
            g_pos[b, k] = l2f * item_w[i, k] - t * pu
            g_neg[b, k] = l2f * item_w[j, k] + t * pu
            g_h[b, k] = s * pu * d
    loss = 0.0
    gh = np.zeros(k_dim, np.float32)
    for b in range(b_count):
        loss += losses[b]
        for k in range(k_dim):
            gh[k] -= g_h[b, k]
    used_u = np.zeros(parts, np.int64)
    used_i = np.zeros(parts, np.int64)
    for t in prange(parts):
        ur = user_rows[t * b_count : (t + 1) * b_count]
        ug = user_grads[t * b_count : (t + 1) * b_count]
        ir = item_rows[t * 2 * b_count : (t + 1) * 2 * b_count]
        ig = item_grads[t * 2 * b_count : (t + 1) * 2 * b_count]
        n_u = 0
        n_i = 0
        for b in range(b_count):
            if users[b] % parts == t:
                n_u = _add_row(users[b], g_user[b], user_slot, ur, ug, n_u)
            if pos[b] % parts == t:
                n_i = _add_row(pos[b], g_pos[b], item_slot, ir, ig, n_i)
            if neg[b] % parts == t:
                n_i = _add_row(neg[b], g_neg[b], item_slot, ir, ig, n_i)
        used_u[t] = n_u
        used_i[t] = n_i
    step_size = lr * math.sqrt(bc2) / bc1
    for t in prange(parts):  # after every gradient is summed: they read the pre-step weights
        ur = user_rows[t * b_count : (t + 1) * b_count]
        ug = user_grads[t * b_count : (t + 1) * b_count]
        ir = item_rows[t * 2 * b_count : (t + 1) * 2 * b_count]
        ig = item_grads[t * 2 * b_count : (t + 1) * 2 * b_count]
        _adam_rows(ur, used_u[t], ug, user_w, user_m, user_v, user_slot, step_size, b1, b2, eps)
        _adam_rows(ir, used_i[t], ig, item_w, item_m, item_v, item_slot, step_size, b1, b2, eps)
    adam_dense(gh, h, h_m, h_v, lr, b1, b2, eps, bc1, bc2)
    return loss


@njit(parallel=True, fastmath=_FM, **_JIT)
def bpr_sgd_step(users, pos, neg, user_w, item_w, h, l2, lr, neg_scores, parts):
    """One BPR step of a GMF with hand-computed gradients and plain SGD (``optim.SGDOptimizer``).

    The loss and gradients of :func:`bpr_adam_step` (every gradient from the weights before the step),
    then ``w_r -= lr * g_r`` for each distinct row, ``g_r`` the sum of its gradients in the batch, and
    ``h -= lr * g_h``. Writes the pre-step negative scores into ``neg_scores`` and returns the summed
    loss (float64).

    SGD is linear in the gradient, so a row's gradients are subtracted one by one in batch order
    (``w_r -= lr * g_{r,1}``, then ``- lr * g_{r,2}``, ...) instead of summed into a slot first: the
    same update up to float32 rounding, without the slot table and scratch buffers of
    :func:`bpr_adam_step`. Parallel and deterministic: the scores per row in parallel, then ``parts``
    workers each own the table rows ``r`` with ``r % parts`` equal to their index and apply those rows'
    gradients in batch order, so the result does not depend on ``parts``.
    """
    b_count = users.shape[0]
    k_dim = h.shape[0]
    losses = np.empty(b_count, np.float64)
    g_user = np.empty((b_count, k_dim), np.float32)
    g_pos = np.empty((b_count, k_dim), np.float32)
    g_neg = np.empty((b_count, k_dim), np.float32)
    g_h = np.empty((b_count, k_dim), np.float32)
    l2f = np.float32(l2)
    for b in prange(b_count):  # as bpr_adam_step
        u = users[b]
        i = pos[b]
        j = neg[b]
        x = np.float32(0.0)
        sj = np.float32(0.0)
        sq = np.float32(0.0)
        for k in range(k_dim):
            ph = user_w[u, k] * h[k]
            x += ph * (item_w[i, k] - item_w[j, k])
            sj += ph * item_w[j, k]
            sq += user_w[u, k] * user_w[u, k] + item_w[i, k] * item_w[i, k] + item_w[j, k] * item_w[j, k]
        neg_scores[b] = sj
        z = -float(x)
        if z > 0:
            losses[b] = z + math.log1p(math.exp(-z)) + 0.5 * l2 * float(sq)
            s = np.float32(1.0 / (1.0 + math.exp(-z)))
        else:
            ez = math.exp(z)
            losses[b] = math.log1p(ez) + 0.5 * l2 * float(sq)
            s = np.float32(ez / (1.0 + ez))
        for k in range(k_dim):
            pu = user_w[u, k]
            d = item_w[i, k] - item_w[j, k]
            t = s * h[k]
            g_user[b, k] = l2f * pu - t * d
            g_pos[b, k] = l2f * item_w[i, k] - t * pu
            g_neg[b, k] = l2f * item_w[j, k] + t * pu
            g_h[b, k] = s * pu * d
    loss = 0.0
    gh = np.zeros(k_dim, np.float32)
    for b in range(b_count):
        loss += losses[b]
        for k in range(k_dim):
            gh[k] -= g_h[b, k]
    # the gradients above read the pre-step weights: each worker now applies those of its own rows
    lrf = np.float32(lr)
    for t in prange(parts):
        for b in range(b_count):
            u = users[b]
            if u % parts == t:
                for k in range(k_dim):
                    user_w[u, k] -= lrf * g_user[b, k]
            i = pos[b]
            if i % parts == t:
                for k in range(k_dim):
                    item_w[i, k] -= lrf * g_pos[b, k]
            j = neg[b]
            if j % parts == t:
                for k in range(k_dim):
                    item_w[j, k] -= lrf * g_neg[b, k]
    for k in range(k_dim):
        h[k] -= lrf * gh[k]
    return loss


# ------------------------------------------------------------------------------ learned samplers
@njit(parallel=True, fastmath=_FM, **_JIT)
def score_and_choose(users, cands, user_w, item_w, h, inv_temp, seed):
    """Log-softmax of ``h . (p_u * q_c) / T`` over each row of candidates, and one draw from it.

    The draw inverts the softmax's distribution function at one uniform number per row (counter
    ``b``); it has the distribution of the torch path's Gumbel-max draw. Returns ``log_p`` (B, N)
    float32 and ``choice`` (B,) int64. Rows run in parallel.
    """
    b_count, n = cands.shape
    k_dim = h.shape[0]
    log_p = np.empty((b_count, n), np.float32)
    choice = np.empty(b_count, np.int64)
    for b in prange(b_count):
        u = users[b]
        ph = np.empty(k_dim, np.float32)
        for k in range(k_dim):
            ph[k] = user_w[u, k] * h[k]
        top = -np.inf
        for c in range(n):
            item = cands[b, c]
            z = np.float32(0.0)
            for k in range(k_dim):
                z += ph[k] * item_w[item, k]
            z = z * inv_temp
            log_p[b, c] = z
            top = max(top, float(z))
        weights = np.empty(n, np.float64)  # exp(z - max z), kept for the draw
        acc = 0.0
        for c in range(n):
            weights[c] = math.exp(float(log_p[b, c]) - top)
            acc += weights[c]
        lse = top + math.log(acc)
        for c in range(n):
            log_p[b, c] = np.float32(float(log_p[b, c]) - lse)
        # inverse CDF; the target is scaled by the float64 sum so rounding cannot skip the last item
        target = _unit(seed, b) * acc
        run = 0.0
        pick = n - 1
        for c in range(n):
            run += weights[c]
            if run > target:
                pick = c
                break
        choice[b] = pick
    return log_p, choice


@njit(parallel=True, fastmath=_FM, **_JIT)
def reinforce_adam_step(
    users, cands, choice, log_p, rewards, user_w, item_w, h, user_m, user_v, item_m, item_v, h_m, h_v,
    user_slot, user_rows, user_grads, item_slot, item_rows, item_grads, l2, lr, b1, b2, eps, bc1, bc2,
    parts,
):  # fmt: skip
    """One REINFORCE step of the sampler's GMF, gradients by hand, row-wise Adam.

    ``rewards`` are already divided by the temperature. With ``pi = exp(log_p)``:
    ``dL/dz_bc = R_b (pi_bc - 1[c = choice_b])``; the item rows get ``dz * p_u * h`` (plus ``l2 * q`` for
    the chosen one), the user row ``h * sum_c dz_bc q_c + l2 * p_u``, ``h`` ``sum_b p_u * sum_c dz q_c``.
    Parallel and deterministic as :func:`bpr_adam_step` (``parts * B`` user and ``parts * B * N`` item
    slots of scratch).
    """
    b_count, n = cands.shape
    k_dim = h.shape[0]
    dz = np.empty((b_count, n), np.float32)
    gq = np.empty((b_count, k_dim), np.float32)
    ph = np.empty((b_count, k_dim), np.float32)
    g_user = np.empty((b_count, k_dim), np.float32)
    l2f = np.float32(l2)
    for b in prange(b_count):
        u = users[b]
        r = rewards[b]
        for k in range(k_dim):
            gq[b, k] = 0.0
            ph[b, k] = user_w[u, k] * h[k]
        for c in range(n):
            item = cands[b, c]
            d = r * np.float32(math.exp(log_p[b, c]))
            if c == choice[b]:
                d -= r
            dz[b, c] = d
            for k in range(k_dim):
                gq[b, k] += d * item_w[item, k]
        for k in range(k_dim):
            g_user[b, k] = gq[b, k] * h[k] + l2f * user_w[u, k]
    gh = np.zeros(k_dim, np.float32)
    for b in range(b_count):
        u = users[b]
        for k in range(k_dim):
            gh[k] += user_w[u, k] * gq[b, k]
    cap_i = b_count * n
    used_u = np.zeros(parts, np.int64)
    used_i = np.zeros(parts, np.int64)
    for t in prange(parts):
        ur = user_rows[t * b_count : (t + 1) * b_count]
        ug = user_grads[t * b_count : (t + 1) * b_count]
        ir = item_rows[t * cap_i : (t + 1) * cap_i]
        ig = item_grads[t * cap_i : (t + 1) * cap_i]
        n_u = 0
        n_i = 0
        for b in range(b_count):
            for c in range(n):
                item = cands[b, c]
                if item % parts != t:
                    continue
                si = _slot(item, item_slot, ir, ig, n_i)
                if si == n_i:
                    n_i += 1
                d = dz[b, c]
                for k in range(k_dim):
                    ig[si, k] += d * ph[b, k]
                if c == choice[b] and l2 > 0:
                    for k in range(k_dim):
                        ig[si, k] += l2f * item_w[item, k]
            if users[b] % parts == t:
                n_u = _add_row(users[b], g_user[b], user_slot, ur, ug, n_u)
        used_u[t] = n_u
        used_i[t] = n_i
    step_size = lr * math.sqrt(bc2) / bc1
    for t in prange(parts):
        ur = user_rows[t * b_count : (t + 1) * b_count]
        ug = user_grads[t * b_count : (t + 1) * b_count]
        ir = item_rows[t * cap_i : (t + 1) * cap_i]
        ig = item_grads[t * cap_i : (t + 1) * cap_i]
        _adam_rows(ur, used_u[t], ug, user_w, user_m, user_v, user_slot, step_size, b1, b2, eps)
        _adam_rows(ir, used_i[t], ig, item_w, item_m, item_v, item_slot, step_size, b1, b2, eps)
    adam_dense(gh, h, h_m, h_v, lr, b1, b2, eps, bc1, bc2)


@njit(parallel=True, fastmath=_FM, **_JIT)
def best_candidate(users, cands, user_w, item_w, h):
    """Index of the highest-scored candidate of each row (DNS); the first on ties."""
    b_count, n = cands.shape
    k_dim = h.shape[0]
    out = np.empty(b_count, np.int64)
    for b in prange(b_count):
        u = users[b]
        ph = np.empty(k_dim, np.float32)
        for k in range(k_dim):
            ph[k] = user_w[u, k] * h[k]
        best = -np.inf
        pick = 0
        for c in range(n):
            item = cands[b, c]
            z = np.float32(0.0)
            for k in range(k_dim):
                z += ph[k] * item_w[item, k]
            if z > best:
                best = z
                pick = c
        out[b] = pick
    return out


@njit(parallel=True, fastmath=_FM, **_JIT)
def top_n_choice(users, cands, user_w, item_w, h, n_top, seed):
    """Index of one candidate per row drawn uniformly among its ``n_top`` highest-scored (DNS(M, N)).

    The scores ``h . (p_u * q_c)`` of a row are ranked highest first, equal scores by position (the
    earlier first) and NaN scores last, as a stable sort of the negated scores ranks them; the drawn
    rank is ``_below(seed, b, n_top)`` (counter ``b``, the row), so the result depends on the seed
    alone. Rows run in parallel. For ``n_top <= 32`` the ``n_top`` best are kept by insertion while
    the row is scored (:func:`_insert_ranked`; a few comparisons per candidate instead of a sort of
    all of them), for more by the stable sort.
    """
    b_count, n = cands.shape
    k_dim = h.shape[0]
    out = np.empty(b_count, np.int64)
    for b in prange(b_count):
        u = users[b]
        ph = np.empty(k_dim, np.float32)
        for k in range(k_dim):
            ph[k] = user_w[u, k] * h[k]
        z = np.empty(n, np.float32)
        for c in range(n):
            item = cands[b, c]
            acc = np.float32(0.0)
            for k in range(k_dim):
                acc += ph[k] * item_w[item, k]
            z[c] = acc
        rank = _below(seed, b, n_top)
        if n_top <= 32:
            top_z = np.empty(n_top, np.float32)
            top_c = np.empty(n_top, np.int64)
            filled = 0
            for c in range(n):
                filled = _insert_ranked(z[c], c, top_z, top_c, filled)
            out[b] = top_c[rank]
        else:
            out[b] = np.argsort(-z, kind="mergesort")[rank]
    return out


@njit(inline="always", **_JIT)
def _ranks_before(a, b):
    """Whether score ``a`` of a later position ranks before score ``b``: higher, or ``b`` NaN and ``a``
    not."""
    return a > b or (b != b and a == a)


@njit(inline="always", **_JIT)
def _insert_ranked(zc, c, top_z, top_c, filled):
    """Insert candidate ``c`` (score ``zc``, a later position than every kept one) into the kept best
    ``top_z``/``top_c`` (ranked, ``filled`` of ``len(top_z)`` used); returns the new ``filled``."""
    m = top_z.shape[0]
    if filled < m:
        pos = filled
        filled += 1
    elif _ranks_before(zc, top_z[m - 1]):
        pos = m - 1
    else:
        return filled
    while pos > 0 and _ranks_before(zc, top_z[pos - 1]):
        top_z[pos] = top_z[pos - 1]
        top_c[pos] = top_c[pos - 1]
        pos -= 1
    top_z[pos] = zc
    top_c[pos] = c
    return filled


@njit(parallel=True, fastmath=_FM, **_JIT)
def loss_softmax_choice(users, positives, cands, user_w, item_w, h, rho, seed):
    """Index of one candidate per row drawn with Softmax(rho, N)'s weights ``softmax(Z / tau)``,
    ``Z_c = softplus(s_c - s_pos)``, ``tau = sqrt(Var(Z) / (2 rho))`` (unbiased variance; uniform if
    every ``Z`` is equal). Scores in float32 as the other kernels, the weights in float64; the draw
    inverts the distribution function at ``_unit(seed, b)``. Rows run in parallel.
    """
    b_count, n = cands.shape
    k_dim = h.shape[0]
    out = np.empty(b_count, np.int64)
    for b in prange(b_count):
        u = users[b]
        ph = np.empty(k_dim, np.float32)
        for k in range(k_dim):
            ph[k] = user_w[u, k] * h[k]
        x = np.float32(0.0)
        i = positives[b]
        for k in range(k_dim):
            x += ph[k] * item_w[i, k]
        z = np.empty(n, np.float64)
        for c in range(n):  # the scores first, their softplus after (BENCHMARKS.md, "Draws without division")
            item = cands[b, c]
            s = np.float32(0.0)
            for k in range(k_dim):
                s += ph[k] * item_w[item, k]
            z[c] = float(s)
        mean = 0.0
        top = -np.inf
        for c in range(n):
            d = z[c] - float(x)
            z[c] = d + math.log1p(math.exp(-d)) if d > 0 else math.log1p(math.exp(d))  # softplus
            mean += z[c]
            top = max(top, z[c])
        mean /= n
        var = 0.0
        for c in range(n):
            var += (z[c] - mean) ** 2
        var /= n - 1
        tau = math.sqrt(var / (2.0 * rho))
        acc = 0.0
        for c in range(n):
            z[c] = math.exp((z[c] - top) / tau) if tau > 0 else 1.0  # the weights, max 1
            acc += z[c]
        target = _unit(seed, b) * acc
        run = 0.0
        pick = n - 1
        for c in range(n):
            run += z[c]
            if run > target:
                pick = c
                break
        out[b] = pick
    return out


# ------------------------------------------------------------------------------------------ SRNS
@njit(parallel=True, fastmath=_FM, **_JIT)
def variance_choice(users, positives, cands, cand_hist, pos_hist, user_w, item_w, h, weight):
    """Index of the candidate of each row maximising ``sigmoid(z_c - z_pos) + weight * std_t
    sigmoid(y_ct - x_t)`` (SRNS; ``y``/``x`` the candidates'/positive's recorded scores, population
    standard deviation over ``t``, 0 without history); the first on ties. The sigmoids and the standard
    deviation are taken in float64 from the float32 scores. Rows run in parallel.
    """
    b_count, n = cands.shape
    t_count = cand_hist.shape[2]
    k_dim = h.shape[0]
    with_std = weight != 0.0 and t_count > 0
    out = np.empty(b_count, np.int64)
    for b in prange(b_count):
        u = users[b]
        ph = np.empty(k_dim, np.float32)
        for k in range(k_dim):
            ph[k] = user_w[u, k] * h[k]
        zp = np.float32(0.0)
        for k in range(k_dim):
            zp += ph[k] * item_w[positives[b], k]
        best = -np.inf
        pick = 0
        for c in range(n):
            item = cands[b, c]
            z = np.float32(0.0)
            for k in range(k_dim):
                z += ph[k] * item_w[item, k]
            crit = 1.0 / (1.0 + math.exp(np.float64(zp) - np.float64(z)))
            if with_std:
                mean = 0.0
                for t in range(t_count):
                    gap = np.float64(pos_hist[b, t]) - np.float64(cand_hist[b, c, t])
                    mean += 1.0 / (1.0 + math.exp(gap))
                mean /= t_count
                var = 0.0
                for t in range(t_count):
                    gap = np.float64(pos_hist[b, t]) - np.float64(cand_hist[b, c, t])
                    d = 1.0 / (1.0 + math.exp(gap)) - mean
                    var += d * d
                crit += weight * math.sqrt(var / t_count)
            if crit > best:
                best = crit
                pick = c
        out[b] = pick
    return out


@njit(parallel=True, fastmath=_FM, **_JIT)
def softmax_subset(users, cands, user_w, item_w, h, k_keep, inv_temp, seed):
    """Indices of ``k_keep`` candidates per row drawn without replacement with probabilities
    ``softmax(inv_temp * z)`` among those left (Gumbel-top-k), in decreasing order of the key
    ``inv_temp * z_c - log(-log U_c)``, ``U_c = _unit(seed, b * N + c)`` (so the result depends on the
    seed alone; equal keys: the earlier index first). The key order is computed as the increasing order
    of ``log(-log(U_c)) + inv_temp * (max_z - z_c)`` (finite at any temperature), kept by insertion
    into the ``k_keep`` best so far. Rows run in parallel.
    """
    b_count, n = cands.shape
    k_dim = h.shape[0]
    out = np.empty((b_count, k_keep), np.int64)
    for b in prange(b_count):
        u = users[b]
        ph = np.empty(k_dim, np.float32)
        for k in range(k_dim):
            ph[k] = user_w[u, k] * h[k]
        z = np.empty(n, np.float64)
        top = -np.inf
        for c in range(n):
            item = cands[b, c]
            acc = np.float32(0.0)
            for k in range(k_dim):
                acc += ph[k] * item_w[item, k]
            z[c] = acc
            top = max(top, np.float64(acc))
        best_key = np.empty(k_keep, np.float64)
        best = out[b]
        filled = 0
        for c in range(n):
            unit = max(_unit(seed, b * n + c), 1e-300)
            key = math.log(-math.log(unit)) + inv_temp * (top - z[c])  # no overflow at a low temperature
            if filled == k_keep and not key < best_key[k_keep - 1]:
                continue
            pos = filled if filled < k_keep else k_keep - 1
            while pos > 0 and key < best_key[pos - 1]:
                best_key[pos] = best_key[pos - 1]
                best[pos] = best[pos - 1]
                pos -= 1
            best_key[pos] = key
            best[pos] = c
            if filled < k_keep:
                filled += 1
    return out


# ------------------------------------------------------------------------------------------- MMD
@njit(fastmath=_FM, **_JIT)
def mmd_reduce(dots, sq_x, sq_g, m, coef, cs, out):
    """The per-instance MMD reward from the cross products of ``mmd.mmd_reward``.

    ``dots[x, b] = <x_x, g_b>`` for the ``m`` exposed rows followed by the generated rows,
    ``sq_x``/``sq_g`` the squared norms. The kernel sum minus its constant is the polynomial ``coef``
    in ``d^2`` (Horner, ``coef[0]`` unused) when ``coef`` is not empty, else ``sum_s expm1(-d^2 c_s)``.
    ``out[b] = 2 * mean_exposed k - 2 * mean_generated k``.
    """
    n_x, b_count = dots.shape
    eg = np.zeros(b_count, np.float64)
    gg = np.zeros(b_count, np.float64)
    d2 = np.empty(b_count, np.float32)
    r = np.empty(b_count, np.float32)
    degree = coef.shape[0] - 1
    two = np.float32(2.0)
    zero = np.float32(0.0)
    for x in range(n_x):
        acc = eg if x < m else gg
        sx = sq_x[x]
        row = dots[x]
        for b in range(b_count):
            d2[b] = max(sx + sq_g[b] - two * row[b], zero)
        if degree > 0:
            top = coef[degree]
            for b in range(b_count):
                r[b] = d2[b] * top
            for p in range(degree - 1, 0, -1):
                cp = coef[p]
                for b in range(b_count):
                    r[b] = (r[b] + cp) * d2[b]
        else:
            for b in range(b_count):
                r[b] = zero
            for c in cs:
                for b in range(b_count):
                    r[b] += np.float32(math.expm1(-float(d2[b]) * c))
        for b in range(b_count):
            acc[b] += r[b]
    n_g = n_x - m
    for b in range(b_count):
        out[b] = 2.0 * (eg[b] / m - gg[b] / n_g)


# ------------------------------------------------------------------------------------ evaluation
@njit(parallel=True, fastmath=_FM, **_JIT)
def score_lists(users, items, user_w, item_w, h):
    """GMF scores ``h . (p_u * q_i)`` of item lists (n, L), as float64 (rows in parallel)."""
    n, length = items.shape
    k_dim = h.shape[0]
    out = np.empty((n, length), np.float64)
    for r in prange(n):
        u = users[r]
        ph = np.empty(k_dim, np.float32)
        for k in range(k_dim):
            ph[k] = user_w[u, k] * h[k]
        for t in range(length):
            item = items[r, t]
            z = np.float32(0.0)
            for k in range(k_dim):
                z += ph[k] * item_w[item, k]
            out[r, t] = z
    return out


@njit(parallel=True, **_JIT)
def list_auc_ndcg(scores, labels, mask, cum):
    """Per-row list AUC and NDCG with ties averaged, as ``metrics._list_metrics_arrays``.

    ``labels`` must be False where ``mask`` is; ``cum[r]`` is the sum of the first ``r`` discounts.
    AUC is the Mann-Whitney statistic with average ranks; NDCG gives every item of a tie group the
    mean discount of the group's positions. NaN for rows without a clicked and an unclicked item.
    """
    n, length = scores.shape
    auc = np.empty(n, np.float64)
    ndcg = np.empty(n, np.float64)
    for r in prange(n):
        vals = np.empty(length, np.float64)
        labs = np.empty(length, np.bool_)
        nv = 0
        for t in range(length):
            if mask[r, t]:
                vals[nv] = scores[r, t]
                labs[nv] = labels[r, t]
                nv += 1
        order = np.argsort(vals[:nv])
        rank_sum = 0.0
        dcg = 0.0
        n_pos = 0
        a = 0
        while a < nv:
            b = a
            while b + 1 < nv and vals[order[b + 1]] == vals[order[a]]:
                b += 1
            clicked = 0
            for t in range(a, b + 1):
                if labs[order[t]]:
                    clicked += 1
            if clicked:
                rank_sum += clicked * ((a + b) / 2.0 + 1.0)
                dcg += clicked * (cum[nv - a] - cum[nv - b - 1]) / (b - a + 1)
                n_pos += clicked
            a = b + 1
        n_neg = nv - n_pos
        if n_pos > 0 and n_neg > 0:
            auc[r] = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
            ndcg[r] = dcg / cum[n_pos]
        else:
            auc[r] = np.nan
            ndcg[r] = np.nan
    return auc, ndcg


# ------------------------------------------------------------------------------ checked entry points
# The kernels above index tables without bounds checks (for speed); every public entry point below
# first checks, once per call, that each index lies inside the table it indexes, so a bad input raises
# an ``IndexError`` instead of reading or writing memory outside the arrays. ``adam_dense`` is called
# from inside other kernels and indexes nothing, so it is left as it is.
def _rows(name: str, index: np.ndarray, n: int) -> None:
    """Raise ``IndexError`` unless every value of ``index`` is in ``[0, n)``."""
    if index.size:
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise IndexError(f"{name}: index {bad} is out of range for {n} rows")


def _same(name: str, *sizes: int) -> None:
    if len(set(sizes)) > 1:
        raise IndexError(f"{name}: sizes {sizes} do not match")


def _check_gmf(users, items, user_w, item_w, h) -> None:
    _same("users and item rows", users.shape[0], items.shape[0])
    _same("embedding sizes", user_w.shape[1], item_w.shape[1], h.shape[0])
    _rows("users", users, user_w.shape[0])
    _rows("items", items, item_w.shape[0])


def _checked(kernel, check):
    """``kernel`` behind ``check(*args)``, with the kernel's name and docstring."""

    def run(*args):
        check(*args)
        return kernel(*args)

    run.__name__, run.__qualname__, run.__doc__ = kernel.__name__, kernel.__name__, kernel.__doc__
    run.kernel = kernel  # the unchecked dispatcher, for callers that have checked already
    return run


def _check_segments(users, indptr, *per_user) -> None:
    _rows("users", users, indptr.shape[0] - 1)
    for a in per_user:
        _same("per-user arrays", a.shape[0], indptr.shape[0] - 1)


score_lists = _checked(score_lists, lambda u, i, uw, iw, h: _check_gmf(u, i, uw, iw, h))
best_candidate = _checked(best_candidate, lambda u, c, uw, iw, h: _check_gmf(u, c, uw, iw, h))


def _check_top_n(users, cands, user_w, item_w, h, n_top, seed) -> None:
    _check_gmf(users, cands, user_w, item_w, h)
    if not 1 <= n_top <= cands.shape[1]:
        raise IndexError(f"n_top: {n_top} of {cands.shape[1]} candidates")


top_n_choice = _checked(top_n_choice, _check_top_n)


def _check_variance_choice(users, positives, cands, cand_hist, pos_hist, user_w, item_w, h, weight) -> None:
    _check_gmf(users, cands, user_w, item_w, h)
    _same("users and positives", users.shape[0], positives.shape[0])
    _rows("positives", positives, item_w.shape[0])
    _same("candidate histories", cand_hist.shape[:2], cands.shape)
    _same("history rows", cand_hist.shape[0], pos_hist.shape[0])
    _same("history lengths", cand_hist.shape[2], pos_hist.shape[1])


def _check_subset(users, cands, user_w, item_w, h, k_keep, inv_temp, seed) -> None:
    _check_gmf(users, cands, user_w, item_w, h)
    if not 1 <= k_keep <= cands.shape[1]:
        raise IndexError(f"k_keep: {k_keep} of {cands.shape[1]} candidates")


variance_choice = _checked(variance_choice, _check_variance_choice)
softmax_subset = _checked(softmax_subset, _check_subset)


def _check_choose(users, cands, user_w, item_w, h, inv_temp, seed) -> None:
    _check_gmf(users, cands, user_w, item_w, h)


def _check_reinforce(users, cands, choice, log_p, rewards, user_w, item_w, h, *rest) -> None:
    _check_gmf(users, cands, user_w, item_w, h)
    _same("rows of choice, log_p and rewards", users.shape[0], choice.shape[0], log_p.shape[0],
          rewards.shape[0])  # fmt: skip
    _rows("choice", choice, cands.shape[1])


def _check_bpr(users, pos, neg, user_w, item_w, h, *rest) -> None:
    _same("users, positives and negatives", users.shape[0], pos.shape[0], neg.shape[0])
    _rows("users", users, user_w.shape[0])
    _rows("positives", pos, item_w.shape[0])
    _rows("negatives", neg, item_w.shape[0])


def _check_rowwise(rows_in, grads_in, weight, *rest) -> None:
    _same("rows and gradients", rows_in.shape[0], grads_in.shape[0])
    _rows("rows", rows_in, weight.shape[0])


def _check_uniform(users, n, gaps, indptr, free, *rest) -> None:
    _check_segments(users, indptr, free)


def _check_sample_segments(users, n, keys, indptr, *rest) -> None:
    _check_segments(users, indptr)


def _check_candidates(users, n, n_exp, gaps, indptr, free, blocked, exp_keys, exp_indptr, *rest) -> None:
    _check_segments(users, indptr, free, blocked)
    _check_segments(users, exp_indptr)


def _check_contains(keys, indptr, users, items, n_items) -> None:
    _same("users and items", users.shape[0], items.shape[0])
    _check_segments(users, indptr)
    _rows("items", items, n_items)


def _check_lists(scores, labels, mask, cum) -> None:
    _same("list shapes", scores.shape, labels.shape, mask.shape)
    if cum.shape[0] < scores.shape[1] + 1:
        raise IndexError(f"cum: {cum.shape[0]} discounts for lists of length {scores.shape[1]}")


def _check_mmd(dots, sq_x, sq_g, m, coef, cs, out) -> None:
    _same("exposed and generated rows", dots.shape[0], sq_x.shape[0])
    _same("instances", dots.shape[1], sq_g.shape[0], out.shape[0])
    if not 0 < m < dots.shape[0]:
        raise IndexError(f"m: {m} exposed rows of {dots.shape[0]}")


score_and_choose = _checked(score_and_choose, _check_choose)
reinforce_adam_step = _checked(reinforce_adam_step, _check_reinforce)
bpr_adam_step = _checked(bpr_adam_step, _check_bpr)
bpr_sgd_step = _checked(bpr_sgd_step, _check_bpr)
rowwise_adam = _checked(rowwise_adam, _check_rowwise)
rowwise_sgd = _checked(rowwise_sgd, _check_rowwise)
sample_uniform = _checked(sample_uniform, _check_uniform)
sample_uniform_bitmap = _checked(sample_uniform_bitmap, _check_uniform)
sample_segments = _checked(sample_segments, _check_sample_segments)
candidates = _checked(candidates, _check_candidates)
contains_segments = _checked(contains_segments, _check_contains)
list_auc_ndcg = _checked(list_auc_ndcg, _check_lists)
mmd_reduce = _checked(mmd_reduce, _check_mmd)
