"""Stateless index maps for the training mixture: which language and which row is example j of a host.

Both maps are pure functions of (seed, indices), so an input position is one integer (the next example's
index) however many languages are mixed: a checkpoint stores that integer, not shuffle buffers.

- `Schedule`: a deterministic temperature interleave. Language l's k-th example sits at the virtual time
  (k + u_l) / rate_l (u_l a seeded phase in [0, 1)); examples are taken in time order. Among the first n
  examples a language has n * rate_l of them to within 1 + rate_l * L (L languages; far tighter than i.i.d.
  draws, same rates), and the example at index j is found without replaying indices < j.
- `permute`: a keyed random permutation of [0, n) evaluated element-wise (a 4-round Feistel network with
  cycle walking), so a language's rows are reshuffled every epoch with O(1) memory.
"""

from __future__ import annotations

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective avalanche on uint64 (wraps around by design)."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _mix64_int(x: int) -> int:
    """`_mix64` of one Python int (the same bits; scalars are ~100x faster without NumPy)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _key(*parts: int) -> np.uint64:
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = _mix64_int(h ^ (int(p) & 0xFFFFFFFFFFFFFFFF))
    return np.uint64(h)


def permute(index: np.ndarray, n: int, *key: int) -> np.ndarray:
    """pi(index) for a random permutation pi of [0, n) chosen by `key` (ints); vectorised over `index`."""
    index = np.asarray(index, np.uint64)
    return permute_groups(index, np.zeros(len(index.ravel()), np.int64), [n], [key]).reshape(index.shape)


def permute_groups(index: np.ndarray, group: np.ndarray, sizes: list[int], keys: list[tuple[int, ...]]) -> np.ndarray:
    """`permute(index[i], sizes[g], *keys[g])` for every i with g = group[i], in one vectorised pass (a batch
    drawing from hundreds of languages costs one Feistel network, not one per language)."""
    index, group = np.asarray(index, np.uint64).ravel(), np.asarray(group, np.int64).ravel()
    n = np.array(sizes, np.int64)
    half = np.array([max(1, ((int(m) - 1).bit_length() + 1) // 2) for m in sizes], np.uint64)  # 2 * half bits cover n
    round_keys = np.array([[_key(*k, r) for r in range(4)] for k in keys], np.uint64).reshape(-1, 4)

    def feistel(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        h = half[g]
        lo_mask = (np.uint64(1) << h) - np.uint64(1)
        left, right = x >> h, x & lo_mask
        for r in range(4):
            left, right = right, left ^ (_mix64(right ^ round_keys[g, r]) & lo_mask)
        return (left << h) | right

    out = feistel(index, group)
    limit = n[group].astype(np.uint64)
    todo = out >= limit
    while todo.any():  # cycle walking: stays a permutation of [0, n) (the domain is < 4n: few walks)
        out[todo] = feistel(out[todo], group[todo])
        todo = out >= limit
    return np.where(n[group] <= 1, 0, out.astype(np.int64))


class Schedule:
    """Example index -> (language, k: that language's how-many-th example), for rates summing to 1."""

    def __init__(self, rates: np.ndarray, seed: int):
        rates = np.asarray(rates, np.float64)
        if rates.ndim != 1 or not len(rates) or (rates <= 0).any() or abs(rates.sum() - 1.0) > 1e-6:
            raise ValueError(f"mixing rates must be positive and sum to 1, got {rates.tolist()[:8]}...")
        self.rates = rates
        self.phase = (_mix64(np.arange(len(rates), dtype=np.uint64) ^ _key(seed, 0x5EED)) >> np.uint64(11)).astype(
            np.float64
        ) / float(1 << 53)
        self.num = len(rates)

    def _time(self, lang: np.ndarray, k: np.ndarray) -> np.ndarray:
        return (k + self.phase[lang]) / self.rates[lang]

    def _count(self, t: float) -> np.ndarray:
        """Per language: how many of its examples have virtual time < t (exact for the float `_time`)."""
        lang = np.arange(self.num)
        c = np.maximum(np.ceil(t * self.rates - self.phase), 0).astype(np.int64)
        c = np.where((c > 0) & (self._time(lang, c - 1) >= t), c - 1, c)  # float rounding: fix by +-1
        c = np.where(self._time(lang, c) < t, c + 1, c)
        return c

    def lookup(self, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(language, k) of examples start .. start + size - 1, in order."""
        t_lo = float(max(start - self.num, 0))  # fewer than `start` examples come before t_lo
        t_hi = float(start + size + self.num)  # at least `start + size` examples come before t_hi
        c_lo, c_hi = self._count(t_lo), self._count(t_hi)
        n = c_hi - c_lo
        lang = np.repeat(np.arange(self.num), n)
        k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(c_lo, n)
        order = np.lexsort((lang, self._time(lang, k)))
        first = start - int(c_lo.sum())
        pick = order[first : first + size]
        return lang[pick], k[pick]


def temperature_rates(sizes: dict[str, float], alpha: float) -> dict[str, float]:
    """rate_l = n_l**alpha / sum_k n_k**alpha (XLM-R's / mT5's exponentiated sampling; alpha=1: proportional)."""
    weights = {lang: float(n) ** alpha for lang, n in sizes.items()}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}
