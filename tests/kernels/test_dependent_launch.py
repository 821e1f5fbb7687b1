"""When the decode kernels launch dependent on their predecessor: compiled kernels on Hopper or later, never in
the CPU interpreter (which has no grid dependency control), and not when switched off for a comparison. What
the kernels compile to with it is checked in test_ptx_census.py; that they compute the same, on the GPU."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from kernels import decoding, dependent_launch
from kernels.dependent_launch import launch_options, set_dependent_launch


@pytest.fixture
def hopper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A CUDA device of compute capability 9 as far as the module can tell, kernels compiled (not interpreted)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(dependent_launch, "_hardware_supports", lambda device: True)
    yield
    set_dependent_launch(True)


def test_the_installed_triton_has_grid_dependency_control() -> None:
    """Otherwise every GPU would silently launch the old way."""
    assert dependent_launch._TRITON_SUPPORTS


def test_compiled_kernels_on_hopper_launch_dependent(hopper: None) -> None:
    cuda = torch.device("cuda", 0)
    assert launch_options(cuda) == {"DEPENDENT": True, "launch_pdl": True}
    set_dependent_launch(False)
    assert launch_options(cuda) == {"DEPENDENT": False}


def test_the_interpreter_older_gpus_and_the_cpu_launch_as_before(hopper: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert launch_options(torch.device("cpu")) == {"DEPENDENT": False}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert launch_options(torch.device("cuda", 0)) == {"DEPENDENT": False}
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(dependent_launch, "_hardware_supports", lambda device: False)  # an A100
    assert launch_options(torch.device("cuda", 0)) == {"DEPENDENT": False}


def test_a_compiled_decode_step_has_inductor_launch_dependent_exactly_when_the_kernels_do(
        hopper: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inductor's kernels around Shrinkray's must overlap their launches too, or every boundary between an
    inductor kernel and one of Shrinkray's keeps its gap."""
    asked = []
    monkeypatch.setattr(torch, "compile", lambda fn, **options: asked.append(options.get("options")) or fn)
    decoding.compiled_step(_ModelOn("cuda"))
    set_dependent_launch(False)
    decoding.compiled_step(_ModelOn("cuda"))
    set_dependent_launch(True)
    decoding.compiled_step(_ModelOn("cpu"))
    assert asked == [{"triton.enable_pdl": True}, None, None]


class _ModelOn:
    """As much of a model as compiled_step looks at before the first step: where its parameters are."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device, 0) if device == "cuda" else torch.device(device)

    def parameters(self) -> Iterator[SimpleNamespace]:
        return iter([SimpleNamespace(device=self.device)])
