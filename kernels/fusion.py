"""Sibling projections that read one input (an attention block's q/k/v, a gated MLP's gate/up) run as one kernel
call over their stacked output columns: one launch, one pass over x (for W8A8 one per-token quantization of it)
instead of three, and a wider N that fills more of the GPU at decode sizes. Each sibling becomes a view of the
shared output, so the model's own forward code is untouched; a fusion is kept only if the model's logits on a
probe input still match.

A gated MLP (down(silu(gate(x)) * up(x))) whose gate and up run on a kernel that can apply the activation as it
stores (Int4Linear.gated_pair) is replaced whole by GatedMLP: one launch for gate, up and the activation, and no
activation kernel between the two matmuls (at decode sizes it cost as much as a small matmul)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from kernels.linear import CompressedLinear

# child names of one parent that the common decoder blocks call on the same tensor
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("w1", "w3"))
PROBE_TOKENS = 8
# relative logits error allowed: tile and split-K choices differ between the fused and split matmuls, and split-K
# sums arrive in any order, which a deep (or random) model amplifies; so also NOISE_FACTOR x the unfused model's
# own difference between two runs
PROBE_TOLERANCE = 2e-2
NOISE_FACTOR = 4.0

log = logging.getLogger(__name__)


class FusedProjections(nn.Module):
    """One kernel layer over the siblings' stacked output columns. The output is held until every sibling has
    taken its columns and then dropped, so each call starts from the same state (a compiled step keeps its
    guards)."""

    def __init__(self, linears: list[CompressedLinear]) -> None:
        super().__init__()
        self.fused = type(linears[0]).stacked(linears)
        ends = torch.tensor([linear.out_features for linear in linears]).cumsum(0).tolist()
        self.bounds = list(zip([0, *ends[:-1]], ends, strict=True))
        self._input: torch.Tensor | None = None
        self._output: torch.Tensor | None = None
        self._unread = 0

    def columns(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Sibling `index`'s output for x: computed for all siblings on the first call with this x."""
        if self._input is not x or self._unread == 0:
            self._input, self._output, self._unread = x, self.fused(x), len(self.bounds)
        output = self._output
        self._unread -= 1
        if self._unread == 0:
            self._input = self._output = None
        start, end = self.bounds[index]
        return output[..., start:end]


class ProjectionColumns(nn.Module):
    """Stands where one sibling projection was: its columns of the fused output."""

    def __init__(self, shared: FusedProjections, index: int) -> None:
        super().__init__()
        object.__setattr__(self, "shared", shared)  # not a child: the parent owns it, once
        self.index = index
        self.kernel = f"{shared.fused.kernel}-fused"
        start, end = shared.bounds[index]
        self.in_features, self.out_features = shared.fused.in_features, end - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.columns(x, self.index)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


class GatedMLP(nn.Module):
    """Stands where a gated MLP was: `gate_up` computes silu(gate(x)) * up(x) in one kernel layer, then down."""

    def __init__(self, gate_up: CompressedLinear, down_proj: nn.Module) -> None:
        super().__init__()
        self.gate_up = gate_up
        self.down_proj = down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.gate_up(x))


def _computes_silu(activation: object) -> bool:
    """Whether a module's activation is SiLU, by what it computes (transformers names its classes variously)."""
    probe = torch.linspace(-8.0, 8.0, 65)
    try:
        return bool(torch.allclose(activation(probe), nn.functional.silu(probe), atol=1e-6))
    except Exception:  # not callable on a tensor: not an activation this fusion knows
        return False


def _fusable(linears: list[nn.Module | None]) -> bool:
    """Kernel layers that one call serves (kernels/linear.py: CompressedLinear.fuses_with)."""
    first = linears[0]
    return isinstance(first, CompressedLinear) and all(first.fuses_with(linear) for linear in linears[1:])


@dataclass
class _Group:
    """Sibling layers of `parent` to fuse; `owner` (module, child name) holds a gated MLP replaced whole."""

    parent: nn.Module
    names: tuple[str, ...]
    linears: list[CompressedLinear]
    owner: tuple[nn.Module, str] | None = None


def _gated_mlp_owner(model: nn.Module, name: str, parent: nn.Module, linears: list) -> tuple[nn.Module, str] | None:
    """Where a gated MLP whose gate and up (`linears`) can run as one gated kernel layer lives, else None."""
    if not (name and hasattr(type(linears[0]), "gated_pair") and hasattr(parent, "down_proj")
            and _computes_silu(getattr(parent, "act_fn", None))):
        return None
    owner_name, _, child = name.rpartition(".")
    return model.get_submodule(owner_name), child


def _groups(model: nn.Module) -> list[_Group]:
    """Every fusable sibling group whose layers the model holds once (a layer shared between blocks stays)."""
    seen = Counter(id(module) for _, module in model.named_modules(remove_duplicate=False))
    groups = []
    for name, parent in model.named_modules():
        for names in SIBLINGS:
            linears = [getattr(parent, child, None) for child in names]
            if _fusable(linears) and all(seen[id(linear)] == 1 for linear in linears):
                owner = _gated_mlp_owner(model, name, parent, linears) if names == ("gate_proj", "up_proj") else None
                groups.append(_Group(parent, names, linears, owner))
    return groups


def _fuse(groups: list[_Group]) -> list[tuple[_Group, torch.device]]:
    """Fuse the groups in place; returns them with their layers' device, to undo it."""
    replaced = []
    for group in groups:
        if group.owner is not None:
            gate_up = type(group.linears[0]).gated_pair(*group.linears)
            setattr(*group.owner, GatedMLP(gate_up, group.parent.down_proj))
        else:
            shared = FusedProjections(group.linears)
            group.parent.add_module("fused_" + "_".join(group.names), shared)
            for index, name in enumerate(group.names):
                setattr(group.parent, name, ProjectionColumns(shared, index))
        device = next(group.linears[0].buffers()).device
        for linear in group.linears:
            linear.cpu()  # kept off the GPU until the probe has decided
        replaced.append((group, device))
    return replaced


def _unfuse(replaced: list[tuple[_Group, torch.device]]) -> None:
    for group, device in replaced:
        for linear in group.linears:
            linear.to(device)
        if group.owner is not None:
            setattr(*group.owner, group.parent)
            continue
        delattr(group.parent, "fused_" + "_".join(group.names))
        for name, linear in zip(group.names, group.linears, strict=True):
            setattr(group.parent, name, linear)


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).norm() / expected.norm()).item()


def _probe_logits(model: nn.Module, vocab_size: int, device: torch.device) -> torch.Tensor:
    tokens = torch.randint(vocab_size, (1, PROBE_TOKENS), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        return model(input_ids=tokens).logits.float()


def fuse_sibling_projections(
    model: nn.Module, logits: Callable[[nn.Module], torch.Tensor] | None = None,
) -> dict[str, int]:
    """Fuse the sibling kernel projections of a causal LM in place, keeping the fusion only if the logits of a
    probe input stay as close to the unfused model's as allowed (PROBE_TOLERANCE, NOISE_FACTOR); returns how many
    projections of each kernel were fused. `logits` computes the probe logits (default: PROBE_TOKENS seeded
    tokens through model.forward)."""
    if logits is None:
        vocab_size, device = model.config.vocab_size, model.get_input_embeddings().weight.device

        def logits(probed: nn.Module) -> torch.Tensor:
            return _probe_logits(probed, vocab_size, device)

    groups = _groups(model)
    if not groups:
        return {}
    before = logits(model)
    allowed = max(PROBE_TOLERANCE, NOISE_FACTOR * _relative_error(logits(model), before))
    replaced = _fuse(groups)
    try:
        error = _relative_error(logits(model), before)
        verdict, kept = f"differ by {error:.3g} (allowed {allowed:.3g})", error <= allowed  # NaN fails
    except Exception as failure:  # fusion is an optimization: a fused model that fails is undone
        verdict, kept = f"failed: {failure}", False
    if not kept:
        log.warning("sibling projections left apart: the fused model's probe logits %s", verdict)
        _unfuse(replaced)
        return {}
    return dict(Counter(linear.kernel for group, _ in replaced for linear in group.linears))
