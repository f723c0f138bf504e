"""Residual quantizers: item embeddings -> L codes per item (their collisions are re-assigned by
:mod:`crslib.ids.collisions`).

Two estimators with one contract (scikit-learn style: ``__init__`` stores its arguments,
``fit`` returns ``self``, learned state ends in ``_``, ``transform`` is pure):

* :class:`RQVAE` — the paper's residual-quantized VAE (NOTES.md §2, Table 7);
* :class:`RQKMeans` — residual k-means on the embeddings: training-free and fast.

Both quantize greedily, level by level, in a *quantization space* (the RQ-VAE latent, or the
embedding space itself): level ``l`` picks the codeword nearest to the residual left by
levels ``< l``. ``residual_distances(X)`` returns those distances, ``(n, L, K)``, and
``transform(X)`` is their argmin, ``(n, L)`` int64.
:func:`crslib.ids.collisions.reassign_collisions` turns the greedy codes into unique SIDs with
the paper's Appendix A procedure.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, TypeVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits
from torch import nn
from tqdm.auto import tqdm

MAX_LEVELS = 26  # one letter per level in the SID tokens (semantic_ids.LEVEL_NAMES)


# ----------------------------------------------------------------------------- checks
def check_embeddings(X) -> np.ndarray:
    """``X`` as a finite 2-D float array with at least one row; ``ValueError`` otherwise."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"embeddings must be a non-empty (n_items, dim) array, got {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"embeddings must be numeric, got dtype {X.dtype}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"embeddings contain NaN or inf in {len(rows)} rows, "
                         f"e.g. {rows[:5].tolist()}")
    return X


def check_shape(levels: int, codebook_size: int) -> None:
    """``ValueError`` unless ``1 <= levels <= 26`` and ``codebook_size >= 1`` (both ints)."""
    if not isinstance(levels, (int, np.integer)) or not 1 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be an int in [1, {MAX_LEVELS}], got {levels!r}")
    if not isinstance(codebook_size, (int, np.integer)) or codebook_size < 1:
        raise ValueError(f"codebook_size must be an int >= 1, got {codebook_size!r}")


def check_capacity(n_items: int, levels: int, codebook_size: int) -> None:
    """``ValueError`` when ``codebook_size ** levels < n_items``: unique SIDs are impossible."""
    check_shape(levels, codebook_size)
    if codebook_size ** levels < n_items:
        raise ValueError(f"{n_items} items cannot get unique SIDs from {levels} levels x "
                         f"{codebook_size} codes ({codebook_size ** levels} tuples)")


# ----------------------------------------------------------------------------- helpers
F = TypeVar("F", bound=Callable)


def single_threaded(fn: F) -> F:
    """Run ``fn`` with one torch / BLAS / OpenMP thread, then restore the previous counts.

    Reduction order, hence the last bits of every float, can depend on the thread count;
    with one thread the same seed gives the same codes on any machine (and on a shared
    2-core CPU one thread is also the faster choice for these small matrices).
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(1):
                return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)
    return wrapper  # type: ignore[return-value]


def sq_distances(r: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(n, K)`` between rows of ``r`` and codewords ``C``."""
    d = (r * r).sum(1)[:, None] - 2.0 * r @ C.T + (C * C).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans_centers(x: np.ndarray, k: int, seed: int, n_init: int = 1) -> np.ndarray:
    """``k`` k-means centres of ``x`` (scikit-learn ``KMeans``, k-means++ seeding).

    With fewer than ``k`` distinct rows the distinct rows are the centres, repeated to fill
    ``k`` slots; a repeated centre never wins an argmin (the first copy does).
    """
    uniq = np.unique(x, axis=0)
    if len(uniq) <= k:
        centers = uniq
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on near-duplicate data
            centers = KMeans(k, n_init=n_init, random_state=seed).fit(x).cluster_centers_
    return centers[np.arange(k) % len(centers)].astype(x.dtype)


class _ResidualQuantizer(TransformerMixin, BaseEstimator):
    """Shared greedy residual quantization; subclasses define the space and ``fit``. A
    scikit-learn estimator: ``get_params``, ``clone`` and ``fit_transform`` are scikit-learn's."""

    levels: int
    codebook_size: int
    codebooks_: np.ndarray  # (L, K, dim) in the quantization space

    def _check_fitted(self) -> None:
        check_is_fitted(self, "codebooks_", msg=f"{type(self).__name__} is not fitted; call "
                                                 "fit(X) first")

    def _latent(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode_latent(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @single_threaded
    def residual_distances(self, X) -> np.ndarray:
        """``(n, L, K)``: squared distance of each item's level-``l`` residual (along the
        greedy path) to every level-``l`` codeword."""
        self._check_fitted()
        r = self._latent(check_embeddings(X)).astype(np.float64)
        out = np.empty((len(r), self.levels, self.codebook_size))
        for level, C in enumerate(self.codebooks_.astype(np.float64)):
            out[:, level] = sq_distances(r, C)
            r = r - C[out[:, level].argmin(1)]
        return out

    def transform(self, X) -> np.ndarray:
        """Greedy codes ``(n, L)`` int64 in ``[0, K)``; may collide (see reassign_collisions)."""
        return self.residual_distances(X).argmin(-1).astype(np.int64)

    @single_threaded
    def decode(self, codes) -> np.ndarray:
        """Reconstruction in embedding space of the code tuples ``(n, L)``."""
        self._check_fitted()
        codes = np.asarray(codes, dtype=np.int64)
        z = sum(self.codebooks_[level][codes[:, level]] for level in range(self.levels))
        return self._decode_latent(np.asarray(z))

    def reconstruction_error(self, X, codes=None) -> float:
        """Relative squared error ``sum ||x - decode(code)||^2 / sum ||x - mean(x)||^2``
        (0 = perfect, 1 = no better than the mean item); greedy codes when ``codes`` is None."""
        X = check_embeddings(X).astype(np.float64)
        codes = self.transform(X) if codes is None else codes
        err = ((X - self.decode(codes)) ** 2).sum()
        return float(err / max(((X - X.mean(0)) ** 2).sum(), 1e-12))


# ----------------------------------------------------------------------------- RQ-KMeans
class RQKMeans(_ResidualQuantizer):
    """Residual k-means: level ``l`` runs ``KMeans(K)`` on the residuals of levels ``< l``.

    No training loop. The quantization space is a PCA projection of the embeddings to
    ``n_components=32`` dimensions (the RQ-VAE's latent size; ``None`` = the raw embedding
    space): in 384 raw dimensions the level-3 k-means of INSPIRED's 1,496 items collapses
    into one cluster (perplexity 1.5 of 64, 394 collisions), with PCA-32 it does not
    (perplexity 55, 5 collisions). Deterministic for a ``seed`` (level ``l`` uses
    ``seed + l``).
    """

    def __init__(self, levels: int = 4, codebook_size: int = 64, seed: int = 0,
                 n_init: int = 1, n_components: int | None = 32):
        self.levels = levels
        self.codebook_size = codebook_size
        self.seed = seed
        self.n_init = n_init
        self.n_components = n_components

    @single_threaded
    def fit(self, X) -> "RQKMeans":
        check_shape(self.levels, self.codebook_size)
        X = check_embeddings(X).astype(np.float64)
        nc = self.n_components
        self.pca_ = PCA(nc, random_state=self.seed).fit(X) if nc and nc < min(X.shape) else None
        r = self._latent(X)
        books = []
        for level in range(self.levels):
            C = kmeans_centers(r, self.codebook_size, self.seed + level, self.n_init)
            books.append(C)
            r = r - C[sq_distances(r, C).argmin(1)]
        self.codebooks_ = np.stack(books)
        return self

    def _latent(self, X: np.ndarray) -> np.ndarray:
        return X if self.pca_ is None else self.pca_.transform(X)

    def _decode_latent(self, z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        return z if self.pca_ is None else self.pca_.inverse_transform(z)


# ----------------------------------------------------------------------------- RQ-VAE
def _mlp(dims: list[int]) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU blocks; the last layer is a bare Linear."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]
    return nn.Sequential(*layers[:-2])


class RQVAE(_ResidualQuantizer):
    """Residual-quantized VAE (NOTES.md §2): MLP encoder -> L residual codebooks -> MLP decoder.

    From the paper's Table 7: ``levels=4``, ``codebook_size=64``, ``latent_dim=32``,
    ``lr=1e-3``, ``weight_decay=1e-4``, ``batch_size=1024``, 7 encoder layers. Not in the
    paper, chosen here: encoder widths ``hidden_dims=(256, 256, 128, 128, 64, 64)`` (six
    hidden Linear-LayerNorm-ReLU blocks + the latent Linear = 7 linear layers), decoder the
    mirror image; commitment weight ``beta=0.25`` (VQ-VAE, TIGER); ``epochs=80`` (560 steps
    on ReDial's 6,924 items, 20-40 s on one CPU core); AdamW on all parameters.

    Training: inputs are centred and divided by one global scale (``mean_``, ``scale_``)
    so the reconstruction MSE is O(1) for any encoder. Loss = reconstruction MSE + sum over
    levels of ``||sg[r] - c||^2 + beta * ||r - sg[c]||^2``; gradients pass the quantizer
    straight through. Codebooks are initialised explicitly in ``fit`` by residual k-means on
    the untrained encoder's latents of all items. Dead codes: after every epoch, codewords
    no item uses are moved onto random residuals of the current level. Deterministic for a
    ``seed`` on CPU (own RNG state; the global torch RNG is left untouched).
    """

    def __init__(self, levels: int = 4, codebook_size: int = 64, latent_dim: int = 32,
                 hidden_dims: tuple[int, ...] = (256, 256, 128, 128, 64, 64),
                 lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 1024,
                 epochs: int = 80, beta: float = 0.25, seed: int = 0, progress: bool = False):
        self.levels = levels
        self.codebook_size = codebook_size
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.beta = beta
        self.seed = seed
        self.progress = progress

    @single_threaded
    def fit(self, X) -> "RQVAE":
        check_shape(self.levels, self.codebook_size)
        if self.latent_dim < 1 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("latent_dim and batch_size must be >= 1, epochs >= 0")
        X = check_embeddings(X).astype(np.float64)
        self.mean_ = X.mean(0)
        self.scale_ = float(np.sqrt(((X - self.mean_) ** 2).mean())) or 1.0
        x = torch.from_numpy((X - self.mean_) / self.scale_).float()
        dims = [X.shape[1], *self.hidden_dims, self.latent_dim]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            self.encoder_, self.decoder_ = _mlp(dims), _mlp(dims[::-1])
            with torch.no_grad():  # explicit k-means initialisation of the codebooks
                z = self.encoder_(x).numpy()
            init = RQKMeans(self.levels, self.codebook_size, self.seed, n_components=None).fit(z)
            books = nn.Parameter(torch.from_numpy(init.codebooks_).float())
            self.history_: list[float] = []  # mean training loss per epoch
            self._train(x, gen, books)
        self.encoder_.eval()
        self.decoder_.eval()
        self.codebooks_ = books.detach().numpy().copy()
        return self

    def _quantize(self, z: torch.Tensor, books: nn.Parameter
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy residual quantization of a batch: ``(sum of codewords, codebook loss)``."""
        r, q, qloss = z, torch.zeros_like(z), z.new_zeros(())
        for C in books:
            c = C[torch.cdist(r.detach(), C.detach()).argmin(1)]
            qloss = qloss + ((c - r.detach()) ** 2).mean() \
                + self.beta * ((r - c.detach()) ** 2).mean()
            q, r = q + c, r - c.detach()
        return q, qloss

    def _train(self, x: torch.Tensor, gen: torch.Generator, books: nn.Parameter) -> None:
        params = [*self.encoder_.parameters(), *self.decoder_.parameters(), books]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        for _ in tqdm(range(self.epochs), desc="rq-vae", disable=not self.progress):
            total = 0.0
            for idx in torch.randperm(len(x), generator=gen).split(self.batch_size):
                xb = x[idx]
                z = self.encoder_(xb)
                q, qloss = self._quantize(z, books)
                xh = self.decoder_(z + (q - z).detach())  # straight-through estimator
                loss = ((xh - xb) ** 2).mean() + qloss
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.history_.append(total / len(x))
            self._reset_dead_codes(x, gen, books)

    @torch.no_grad()
    def _reset_dead_codes(self, x: torch.Tensor, gen: torch.Generator,
                          books: nn.Parameter) -> None:
        """Move codewords that no item uses onto random residuals of their level."""
        r = self.encoder_(x)
        for C in books.data:
            codes = torch.cdist(r, C).argmin(1)
            dead = torch.bincount(codes, minlength=len(C)) == 0
            if dead.any():
                pick = torch.randint(len(r), (int(dead.sum()),), generator=gen)
                C[dead] = r[pick]
                codes = torch.cdist(r, C).argmin(1)
            r = r - C[codes]

    @torch.no_grad()
    def _latent(self, X: np.ndarray) -> np.ndarray:
        x = torch.from_numpy((X - self.mean_) / self.scale_).float()
        return self.encoder_(x).double().numpy()

    @torch.no_grad()
    def _decode_latent(self, z: np.ndarray) -> np.ndarray:
        xh = self.decoder_(torch.from_numpy(z).float()).double().numpy()
        return xh * self.scale_ + self.mean_


QUANTIZERS = {"rqvae": RQVAE, "rqkmeans": RQKMeans}


def make_quantizer(method: str, **params) -> _ResidualQuantizer:
    """``make_quantizer("rqvae", levels=4, codebook_size=64, seed=0, epochs=80)``."""
    if method not in QUANTIZERS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(QUANTIZERS)}")
    return QUANTIZERS[method](**params)
