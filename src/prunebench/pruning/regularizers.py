"""Regularisation-based pruning schedules: GReg-1 and TPP as training :class:`StepHooks`.

Both methods pick the filters to prune *up front* (:func:`select_filters`: a criterion, L1
by default, scored on the dense model, ``ceil(ratio * n)`` filters per layer, never all:
exactly the choice of one-shot :func:`~prunebench.pruning.structured.prune_structured`),
then train for their own pruning-phase epochs with a penalty whose strength ``lam`` grows
from 0, and finally the pipeline removes the selected filters physically
(:func:`remove_selected`, or ``prune_structured`` with :func:`precomputed_criterion`).
Because the penalty has driven the selected filters (and their BatchNorm channels) to
~zero, that removal barely changes the network's function.

The growing schedule (both methods; the linear schedule of the authors' code): at stage
step ``s`` (the optimiser-step counter :func:`prunebench.train.train` passes, resumes
included)::

    lam(s) = min(reg_ceiling, reg_granularity * (s // update_interval))

i.e. 0 for the first ``update_interval`` steps, then ``+reg_granularity`` every
``update_interval`` steps, capped at ``reg_ceiling`` (defaults 1e-4, 5, 1.0: the ceiling is
reached after 50 000 steps: :func:`steps_to_ceiling`). ``finished`` becomes True at the
first step whose ``lam`` equals the ceiling; the penalty keeps being applied at the ceiling
afterwards (the authors' "stabilize_reg" phase) until the stage ends.

The stopping rule (the authors' code; applied by the pipeline's ``greg``/``tpp`` schedules,
:mod:`prunebench.pruning.schedules`): the phase needs :func:`steps_needed` =
``steps_to_ceiling + 1 + stabilize_interval`` optimiser steps (the growth, the first
step at the ceiling, then ``stabilize_interval`` more steps at the ceiling: the authors'
``--stabilize_reg_interval``, 40 000 by default there) and stops at the end of the epoch
in which that many steps are done; only then are the filters removed.

Notation per regularised layer: ``W`` its weight reshaped to ``(N, D)`` (N filters /
neurons), ``P`` the rows to prune, ``K`` the rows to keep, ``m`` the 0/1 keep vector
(``m_i = 1`` for ``i`` in ``K``), ``b`` its bias (if any) and ``gamma``/``beta`` the affine
parameters of the BatchNorm whose channels follow the layer's outputs (if any).

**GReg-1** (Wang, Qin, Zhang, Fu, "Neural Pruning via Growing Regularization", ICLR 2021)::

    L_GReg = lam/2 * sum_layers ( ||W_P||_F^2 + [ ||b_P||^2 ] + [ ||gamma_P||^2 + ||beta_P||^2 ] )

so ``after_backward`` adds ``lam * x`` to the gradient of each penalised row/entry ``x``.
Kept filters get nothing: their gradients are left exactly as the loss made them. By
default only the conv/linear weights are penalised, as in the ICLR 2021 paper and the
authors' GReg code; the bracketed bias and BN terms are opt-in (``penalize_bias=True``,
``penalize_bn=True``; recipe ``prune.reg_bias_bn: true``), as in the authors' later TPP
repository (its ``_apply_reg``, whose ``--weight_reg``/``--bn_reg`` default on). Penalising
the BN affine parameters matters in practice: a BN layer in training mode rescales the
output of a near-zero filter back to unit variance, so only ``gamma, beta -> 0`` make the
channel really silent.

**TPP** (Wang & Fu, "Trainability Preserving Neural Pruning", ICLR 2023; scheme ``v5`` of
the authors' ``opp_pruner.py``, the default): with the Gram matrix ``G = W W^T`` and
``E = 1 - m m^T`` (1 wherever row *or* column is a pruned filter), the target Gram matrix
is ``G ⊙ m m^T`` (``G`` with the pruned rows and columns zeroed, held constant), and::

    L_TPP = lam * sum_layers ( gram_weight / N^2 * ||G ⊙ E||_F^2                  (Gram term)
                               + 1/2 (||W_P||_F^2 + ||b_P||^2) * [weight_l2]       (L2 term)
                               + 1/2 (||gamma_P||^2 + ||beta_P||^2) * [penalize_bn] )  (BN)

``||G ⊙ E||_F^2 / N^2`` is the mean squared error between ``G`` and its target (the
authors' ``F.mse_loss(W W^T, target.detach())``), ``gram_weight`` their ``--lw_opp``
(default 1000). The Gram term drives the pruned filters to zero (its diagonal entries
``||w_i||^4``, i in P) and decorrelates the kept filters from the pruned ones (the
``G_KP`` entries); the kept-kept block ``G_KK`` is not penalised (it equals its target).
Its gradient, implemented analytically, is ``4 * lam * gram_weight / N^2 * (G ⊙ E) W``:
row ``i`` in P gets ``sum_j G_ij w_j`` (all j), row ``k`` in K gets ``sum_{j in P} G_kj
w_j``. The L2 and BN terms (the authors' ``_apply_reg``, on by default there) add
``lam * x`` to each pruned row / channel as in GReg.

The hooks only read parameters and add to ``.grad`` (creating a zero gradient where the
loss gave none): they need no loss graph. ``penalty(model)`` evaluates the documented loss
differentiably, for checks and logging. The stated knob defaults (1e-4 every 5 steps to
1.0) are the authors'; note the Gram term's curvature grows with ``||w||^2``, so with
large weights it wants the small pruning LR the authors use (1e-3 .. 1e-2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunebench.errors import PruningError
from prunebench.pruning import structured
from prunebench.pruning.context import Criterion, PruneContext
from prunebench.pruning.ratios import num_to_prune, output_layer_name
from prunebench.pruning.structured import (
    PruneOutcome,
    _build_graph,
    _check_prunable,
    _choose,
    _eval_mode,
    _get_layer,
    _out_channels,
    _out_pruning_fn,
    _resolve_criterion,
    apply_structure,
)
from prunebench.train import StepHooks

__all__ = [
    "REGULARIZERS",
    "GReg",
    "GrowingRegularizer",
    "Selection",
    "TPP",
    "precomputed_criterion",
    "remove_selected",
    "select_filters",
    "steps_needed",
    "steps_to_ceiling",
]


def _ceiling_updates(reg_granularity: float, reg_ceiling: float) -> int:
    """Increments after which ``lam`` reaches the ceiling (integer: no float drift)."""
    return max(1, math.ceil(float(reg_ceiling) / float(reg_granularity) - 1e-9))


def steps_to_ceiling(reg_granularity: float, update_interval: int, reg_ceiling: float) -> int:
    """The 0-based step at which ``lam`` first equals ``reg_ceiling`` (= steps before it).

    >>> steps_to_ceiling(1e-4, 5, 1.0)
    50000
    """
    return _ceiling_updates(reg_granularity, reg_ceiling) * int(update_interval)


def steps_needed(
    reg_granularity: float, update_interval: int, reg_ceiling: float, stabilize_interval: int = 0
) -> int:
    """Optimiser steps the pruning phase needs: the growth, the first step at the ceiling,
    then ``stabilize_interval`` more steps at the ceiling.

    >>> steps_needed(0.25, 3, 1.0, stabilize_interval=4)  # ceiling at step 12, then 4 more
    17
    """
    return steps_to_ceiling(reg_granularity, update_interval, reg_ceiling) + 1 + int(
        stabilize_interval
    )


# --------------------------------------------------------------------------- selection


@dataclass
class Selection:
    """Which output channels of each layer to keep / prune (original dense indexing).

    ``kept[name]`` and ``pruned[name]`` are sorted, disjoint and together ``range(n)``.
    ``bn[name]`` names the BatchNorm modules whose channels follow the layer's outputs
    (found by :func:`select_filters`); the regularisers penalise their pruned channels.
    """

    kept: dict[str, list[int]]
    pruned: dict[str, list[int]]
    bn: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts/lists (JSON- and ``torch.load(weights_only=True)``-safe)."""
        return {
            "kept": {k: list(v) for k, v in self.kept.items()},
            "pruned": {k: list(v) for k, v in self.pruned.items()},
            "bn": {k: list(v) for k, v in self.bn.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Selection:
        return cls(
            kept={k: [int(i) for i in v] for k, v in d["kept"].items()},
            pruned={k: [int(i) for i in v] for k, v in d["pruned"].items()},
            bn={k: [str(s) for s in v] for k, v in d.get("bn", {}).items()},
        )


def _bn_from_graph(model: nn.Module, graph: Any, name: str) -> list[str]:
    """BatchNorm modules in ``name``'s output-channel pruning group (they follow it)."""
    module = model.get_submodule(name)
    names = {id(m): n for n, m in model.named_modules()}
    group = graph.get_pruning_group(module, _out_pruning_fn(module), idxs=[0])
    found: list[str] = []
    for item in group:
        target = item.dep.target.module
        if isinstance(target, _BatchNorm) and id(target) in names:
            bn_name = names[id(target)]
            if bn_name not in found:
                found.append(bn_name)
    return found


def _bn_by_order(model: nn.Module, name: str) -> list[str]:
    """Fallback without example inputs: the first BatchNorm registered after ``name``
    (before any other Conv2d/Linear) with a matching channel count."""
    n = _out_channels(model.get_submodule(name))
    seen = False
    for other, module in model.named_modules():
        if other == name:
            seen = True
            continue
        if not seen:
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return []
        if isinstance(module, _BatchNorm):
            return [other] if module.num_features == n else []
    return []


def _score_without_graph(
    model: nn.Module,
    names: list[str],
    criterion: str | Criterion,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None,
    seed: int,
) -> dict[str, torch.Tensor]:
    """The scoring loop of ``prune_structured`` for a call without example inputs."""
    crit_name, crit = _resolve_criterion(criterion)
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, torch.Tensor] = {}
    for name in names:
        ctx = PruneContext(model, name, None, batches, generator)  # type: ignore[arg-type]
        scores[name] = structured.checked_scores(crit_name, crit, model.get_submodule(name), ctx)
    return scores


def select_filters(
    model: nn.Module,
    ratios: dict[str, float],
    criterion: str | Criterion = "l1",
    example_inputs: torch.Tensor | None = None,
    seed: int = 0,
    *,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    allocate: Callable[[dict[str, torch.Tensor], Any], dict[str, int]] | None = None,
) -> Selection:
    """Score every layer in ``ratios`` on the dense ``model`` and choose, without removing.

    Same choice as :func:`prune_structured` with the same arguments (it runs the same
    scoring code when ``example_inputs`` are given): ``num_to_prune(n, ratio)``
    lowest-scoring channels per layer (ties prune the higher index), or the counts of
    ``allocate(scores, graph)`` (needs ``example_inputs``), one seeded generator shared by
    the layers in order, the model scored in eval mode (its mode is restored). With
    ``example_inputs`` the layers are checked to be prunable and the following BatchNorms
    are taken from Torch-Pruning's dependency graph; without, only the layer type and the
    output layer are checked, the BatchNorm is the next one registered after the layer
    (right for the zoo's models) and criteria that need inputs or a graph cannot run.
    """
    for ratio in ratios.values():
        num_to_prune(1, ratio)  # validates the ratio before any work
    _resolve_criterion(criterion)
    names = list(ratios)
    selection = Selection(kept={}, pruned={}, bn={})
    with _eval_mode(model):
        graph = None
        if example_inputs is not None:
            graph = _build_graph(model, example_inputs)
            _check_prunable(model, graph, names)
            score_layers = getattr(structured, "_score_layers", None)
            if score_layers is not None:
                scores = score_layers(model, graph, names, criterion, example_inputs, batches, seed)
            else:  # pragma: no cover - older structured.py without the shared loop
                scores = _score_without_graph(model, names, criterion, batches, seed)
        else:
            if allocate is not None:
                raise PruningError("select_filters: allocate needs example_inputs")
            output = output_layer_name(model)
            for name in names:
                _get_layer(model, name)
                if name == output:
                    raise PruningError(
                        f"layer {name!r} cannot be pruned: it is the output layer "
                        "(its channels are the logits)"
                    )
            scores = _score_without_graph(model, names, criterion, batches, seed)
        if allocate is None:
            counts = {name: num_to_prune(len(s), ratios[name]) for name, s in scores.items()}
        else:
            counts = allocate(scores, graph)
        for name in names:
            n = len(scores[name])
            k = counts.get(name, 0)
            if not 0 <= k < n:
                raise PruningError(f"cannot remove {k} of {n} channels from layer {name!r}")
            pruned = _choose(scores[name], k)
            selection.pruned[name] = pruned
            selection.kept[name] = sorted(set(range(n)) - set(pruned))
            selection.bn[name] = (
                _bn_from_graph(model, graph, name)
                if graph is not None
                else _bn_by_order(model, name)
            )
    return selection


def _kept_of(selection: Selection | Mapping[str, list[int]]) -> dict[str, list[int]]:
    if isinstance(selection, Selection):
        return {k: list(v) for k, v in selection.kept.items()}
    return {k: list(v) for k, v in selection.items()}


def precomputed_criterion(selection: Selection | Mapping[str, list[int]]) -> Criterion:
    """A criterion scoring kept channels 1 and the others 0, so that ``prune_structured``
    with the selection's ratios removes exactly the selected channels."""
    kept = _kept_of(selection)

    def precomputed(module: nn.Module, ctx: PruneContext) -> torch.Tensor:
        if ctx.name not in kept:
            raise PruningError(f"layer {ctx.name!r} is not in the precomputed selection")
        scores = torch.zeros(_out_channels(module))
        scores[kept[ctx.name]] = 1.0
        return scores

    return precomputed


def remove_selected(
    model: nn.Module,
    kept: Selection | Mapping[str, list[int]],
    example_inputs: torch.Tensor,
) -> PruneOutcome:
    """Physically remove every channel not in ``kept`` from the still-dense ``model``
    (in place; BN and next-layer inputs follow). Build optimisers afterwards."""
    keep = _kept_of(kept)
    n_total = {name: _out_channels(_get_layer(model, name)) for name in keep}
    apply_structure(model, keep, example_inputs)
    return PruneOutcome(
        kept={name: sorted(idxs) for name, idxs in keep.items()},
        n_pruned={name: n_total[name] - len(idxs) for name, idxs in keep.items()},
        n_total=n_total,
    )


# --------------------------------------------------------------------------- regularisers


@dataclass
class _Layer:
    name: str
    n: int
    pruned: list[int]
    kept: list[int]
    bn: list[str]


def _grad_of(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    return p.grad


def _number(name: str, value: object, *, above: float | None = None,
            at_least: float | None = None) -> None:
    """A finite real number ``> above`` / ``>= at_least`` (PruningError naming it)."""
    bound = f"> {above:g}" if above is not None else f">= {at_least:g}"
    ok = isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) \
        and (above is None or value > above) and (at_least is None or value >= at_least)
    if not ok:
        raise PruningError(f"bad {name} {value!r}: expected a number {bound}")


class GrowingRegularizer(StepHooks):
    """The growing ``lam`` schedule and the L2 penalty on the selected channels.

    Subclasses add their own term in :meth:`_apply_extra` / :meth:`_penalty_extra`.
    """

    kind = "growing"
    #: whether the penalty also reaches a pruned filter's bias entry / following BN
    #: gamma and beta, when the caller does not say (``penalize_bias`` / ``penalize_bn``)
    PENALIZE_BIAS = PENALIZE_BN = True

    def __init__(
        self,
        model: nn.Module,
        selection: Selection,
        *,
        reg_granularity: float = 1e-4,
        update_interval: int = 5,
        reg_ceiling: float = 1.0,
        penalize_bias: bool | None = None,
        penalize_bn: bool | None = None,
    ) -> None:
        _number("reg_granularity", reg_granularity, above=0)
        _number("reg_ceiling", reg_ceiling, above=0)
        if isinstance(update_interval, bool) or not isinstance(update_interval, int) \
                or update_interval < 1:
            raise PruningError(f"bad update_interval {update_interval!r}: expected an int >= 1")
        self.reg_granularity = float(reg_granularity)
        self.update_interval = int(update_interval)
        self.reg_ceiling = float(reg_ceiling)
        self.penalize_bias = self.PENALIZE_BIAS if penalize_bias is None else bool(penalize_bias)
        self.penalize_bn = self.PENALIZE_BN if penalize_bn is None else bool(penalize_bn)
        # Number of increments after which lam reaches the ceiling (integer: no float drift).
        self.n_updates = _ceiling_updates(self.reg_granularity, self.reg_ceiling)
        self.layers = self._check_selection(model, selection)
        self._index_cache: dict[tuple[str, str, torch.device], torch.Tensor] = {}
        self.step: int | None = None
        self.lam = 0.0
        self.finished = False
        self.finished_step: int | None = None

    # ---- setup

    @staticmethod
    def _check_selection(model: nn.Module, selection: Selection) -> list[_Layer]:
        layers: list[_Layer] = []
        for name, pruned in selection.pruned.items():
            module = _get_layer(model, name)
            n = _out_channels(module)
            kept = list(selection.kept.get(name, []))
            if sorted(set(kept) | set(pruned)) != list(range(n)) or len(kept) + len(pruned) != n:
                raise PruningError(
                    f"selection for layer {name!r} does not split its {n} channels into "
                    "disjoint kept and pruned indices (is the model still dense?)"
                )
            if not kept:
                raise PruningError(f"selection for layer {name!r} prunes all {n} channels")
            bns = list(selection.bn.get(name, []))
            for bn_name in bns:
                bn = model.get_submodule(bn_name)
                if not isinstance(bn, _BatchNorm) or bn.num_features != n:
                    raise PruningError(
                        f"module {bn_name!r} is not a BatchNorm with {n} channels following "
                        f"layer {name!r}"
                    )
            if pruned:
                layers.append(_Layer(name, n, sorted(pruned), sorted(kept), bns))
        return layers

    def _idx(self, layer: _Layer, which: str, device: torch.device) -> torch.Tensor:
        key = (layer.name, which, device)
        idx = self._index_cache.get(key)
        if idx is None:
            values = layer.pruned if which == "pruned" else layer.kept
            idx = torch.tensor(values, dtype=torch.long, device=device)
            self._index_cache[key] = idx
        return idx

    # ---- schedule

    def lam_at(self, step: int) -> float:
        """``lam`` applied at stage step ``step`` (0-based)."""
        updates = max(0, int(step)) // self.update_interval
        if updates >= self.n_updates:
            return self.reg_ceiling
        return self.reg_granularity * updates

    def steps_to_ceiling(self) -> int:
        """The first step whose ``lam`` is the ceiling (``finished`` flips there)."""
        return self.n_updates * self.update_interval

    # ---- hooks

    def after_backward(self, model: nn.Module, step: int) -> None:
        lam = self.lam_at(step)
        self.step = int(step)
        self.lam = lam
        if lam >= self.reg_ceiling and not self.finished:
            self.finished = True
            self.finished_step = int(step)
        if lam > 0:
            with torch.no_grad():
                self._apply(model, lam)

    def _l2_params(self, model: nn.Module, layer: _Layer) -> list[torch.Tensor]:
        """Parameters whose dim-0 entries of pruned channels get the L2 term."""
        module = model.get_submodule(layer.name)
        params: list[torch.Tensor] = []
        if self._weight_l2():
            params.append(module.weight)
            if self.penalize_bias and getattr(module, "bias", None) is not None:
                params.append(module.bias)
        if self.penalize_bn:
            for bn_name in layer.bn:
                bn = model.get_submodule(bn_name)
                params.extend(p for p in (bn.weight, bn.bias) if p is not None)
        return params

    def _weight_l2(self) -> bool:
        return True

    def _apply(self, model: nn.Module, lam: float) -> None:
        for layer in self.layers:
            for p in self._l2_params(model, layer):
                idx = self._idx(layer, "pruned", p.device)
                grad = _grad_of(p)
                grad.index_add_(0, idx, p.detach().index_select(0, idx), alpha=lam)
            self._apply_extra(model, layer, lam)

    def _apply_extra(self, model: nn.Module, layer: _Layer, lam: float) -> None:
        pass

    def penalty(self, model: nn.Module, lam: float | None = None) -> torch.Tensor:
        """The documented regularisation loss at ``lam`` (default: the current one),
        differentiable w.r.t. the model's parameters; its gradient is what the hook adds."""
        lam = self.lam if lam is None else float(lam)
        total: torch.Tensor | None = None
        for layer in self.layers:
            for p in self._l2_params(model, layer):
                idx = self._idx(layer, "pruned", p.device)
                term = 0.5 * lam * p.index_select(0, idx).pow(2).sum()
                total = term if total is None else total + term
            extra = self._penalty_extra(model, layer, lam)
            if extra is not None:
                total = extra if total is None else total + extra
        if total is None:
            return torch.zeros(())
        return total

    def _penalty_extra(self, model: nn.Module, layer: _Layer, lam: float) -> torch.Tensor | None:
        return None

    # ---- state

    def _config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reg_granularity": self.reg_granularity,
            "update_interval": self.update_interval,
            "reg_ceiling": self.reg_ceiling,
            "penalize_bias": self.penalize_bias,
            "penalize_bn": self.penalize_bn,
            "layers": [layer.name for layer in self.layers],
        }

    def state_dict(self) -> dict[str, Any]:
        """Schedule progress and knobs (plain Python values; ``weights_only``-loadable).

        ``lam`` is a function of the stage step that ``train`` passes (resumes included), so
        a resumed stage continues the schedule by itself; the state restores ``lam``,
        ``finished``/``finished_step`` before the first resumed step and guards against
        resuming with different knobs.
        """
        return {
            **self._config(),
            "step": self.step,
            "lam": self.lam,
            "finished": self.finished,
            "finished_step": self.finished_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore progress; the knobs must match this hook's (else PruningError)."""
        config = self._config()
        for key, value in config.items():
            if key in state and state[key] != value:
                raise PruningError(
                    f"cannot resume {self.kind} regulariser: saved {key}={state[key]!r} "
                    f"differs from {value!r}"
                )
        step = state.get("step")
        self.step = None if step is None else int(step)
        self.lam = float(state.get("lam", 0.0))
        self.finished = bool(state.get("finished", False))
        fstep = state.get("finished_step")
        self.finished_step = None if fstep is None else int(fstep)


class GReg(GrowingRegularizer):
    """Growing regularisation, GReg-1 (Wang, Qin, Zhang, Fu, ICLR 2021).

    ``after_backward`` adds ``lam * x`` to the gradient of every pruned filter's weight
    row, and, only when asked (``penalize_bias`` / ``penalize_bn``, off by default as in
    the authors' GReg code), of its bias entry and following-BN gamma/beta (see the module
    docstring for the loss and the ``lam`` schedule). Kept filters get no penalty.
    ``finished`` turns True at the step ``lam`` reaches ``reg_ceiling``; the penalty stays
    at the ceiling afterwards.
    """

    kind = "greg"
    PENALIZE_BIAS = PENALIZE_BN = False  # as in the authors' GReg code


class TPP(GrowingRegularizer):
    """Trainability-preserving pruning (Wang & Fu, ICLR 2023).

    Adds, with the growing ``lam`` of GReg, the gradient of
    ``lam * gram_weight / N^2 * ||(W W^T) ⊙ (1 - m m^T)||_F^2`` (the MSE between the Gram
    matrix and its target with pruned rows and columns zeroed), plus the L2 term on the
    pruned filters (``weight_l2``, with their biases) and on the following BN's gamma/beta
    (``penalize_bn``); all on by default as in the authors' code (recipe:
    ``prune.tpp_gram_weight``, ``prune.tpp_weight_l2``, ``prune.tpp_bn_reg``). See the
    module docstring for the exact loss and gradient.
    """

    kind = "tpp"

    def __init__(
        self,
        model: nn.Module,
        selection: Selection,
        *,
        reg_granularity: float = 1e-4,
        update_interval: int = 5,
        reg_ceiling: float = 1.0,
        gram_weight: float = 1000.0,
        weight_l2: bool = True,
        penalize_bias: bool | None = None,
        penalize_bn: bool | None = None,
    ) -> None:
        _number("gram_weight", gram_weight, at_least=0)
        self.gram_weight = float(gram_weight)
        self.weight_l2 = bool(weight_l2)
        super().__init__(
            model,
            selection,
            reg_granularity=reg_granularity,
            update_interval=update_interval,
            reg_ceiling=reg_ceiling,
            penalize_bias=penalize_bias,
            penalize_bn=penalize_bn,
        )

    def _weight_l2(self) -> bool:
        return self.weight_l2

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "gram_weight": self.gram_weight, "weight_l2": self.weight_l2}

    def _apply_extra(self, model: nn.Module, layer: _Layer, lam: float) -> None:
        if self.gram_weight == 0:
            return
        weight = model.get_submodule(layer.name).weight
        w = weight.detach().flatten(1)
        p_idx = self._idx(layer, "pruned", w.device)
        k_idx = self._idx(layer, "kept", w.device)
        w_p = w.index_select(0, p_idx)
        rows_p = w_p @ w.T  # G[P, :]: every entry of a pruned row is penalised
        grad = torch.empty_like(w)
        grad.index_copy_(0, p_idx, rows_p @ w)  # ((G ⊙ E) W)[P] = G[P, :] W
        grad.index_copy_(0, k_idx, rows_p.index_select(1, k_idx).T @ w_p)  # G[K, P] W[P]
        scale = 4.0 * lam * self.gram_weight / (layer.n * layer.n)
        _grad_of(weight).add_(grad.view_as(weight), alpha=scale)

    def _penalty_extra(self, model: nn.Module, layer: _Layer, lam: float) -> torch.Tensor | None:
        if self.gram_weight == 0:
            return None
        w = model.get_submodule(layer.name).weight.flatten(1)
        gram = w @ w.T
        keep = torch.zeros(layer.n, dtype=w.dtype, device=w.device)
        keep[self._idx(layer, "kept", w.device)] = 1.0
        off_target = 1.0 - torch.outer(keep, keep)
        return lam * self.gram_weight / (layer.n * layer.n) * (gram * off_target).pow(2).sum()

    def gram_distance(self, model: nn.Module) -> dict[str, float]:
        """Per layer ``||G ⊙ (1 - m m^T)||_F``: the distance of the Gram matrix from its
        target (0 once the pruned filters are zero and decorrelated from the kept ones)."""
        out: dict[str, float] = {}
        with torch.no_grad():
            for layer in self.layers:
                w = model.get_submodule(layer.name).weight.flatten(1)
                gram = w @ w.T
                keep = torch.zeros(layer.n, dtype=w.dtype, device=w.device)
                keep[self._idx(layer, "kept", w.device)] = 1.0
                out[layer.name] = float((gram * (1.0 - torch.outer(keep, keep))).norm())
        return out


REGULARIZERS: dict[str, type[GrowingRegularizer]] = {"greg": GReg, "tpp": TPP}
"""Method name -> hook class; all take ``(model, selection, **knobs)``."""
