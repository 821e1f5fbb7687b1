"""What every launcher needs to know about Triton here: whether it is installed and whether kernels run in its
CPU interpreter (TRITON_INTERPRET=1, as in CI), where some dtypes must be widened before a dot."""

from __future__ import annotations

import os

try:
    import triton
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources

    # a kernel that does not compile for, or fit on, this GPU (an architecture it was not built for)
    KERNEL_BUILD_FAILURES: tuple[type[Exception], ...] = (CompilationError, OutOfResources)
except ImportError:  # CPU-only installs: modules fall back to their plain-torch references
    triton = None
    KERNEL_BUILD_FAILURES = ()


def build_failure_reason(error: Exception) -> str:
    """One line for a KERNEL_BUILD_FAILURES error, as reports and the CLI show it."""
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    return f"the kernels do not run on this GPU: {type(error).__name__}: {first_line}"


def triton_available() -> bool:
    return triton is not None


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def require_triton() -> None:
    if triton is None:
        raise RuntimeError("triton is not installed")
