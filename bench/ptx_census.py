"""What the Triton kernels compile to, without a GPU: each kernel is compiled for a target architecture (sm_90 by
default) with Triton's bundled ptxas and its PTX counted: shared-memory stores and loads, ldmatrix, tensor-core
instructions (wgmma / mma.sync), asynchronous copies, conversions and shuffles, and whether the Hopper MMA takes
its first operand from registers. The machine code (SASS, disassembled with Triton's bundled cuobjdump) gives
the length of the main loop and so the instructions each thread issues per weight it consumes: the decode GEMV
was measured bound by instruction issue, not HBM, so this number predicts its speed. GPU time through the device
tool is short; this shows on any machine whether a change removed the shared-memory round trip, the conversions
or the instructions it was meant to, before anything is timed.

    python bench/ptx_census.py [--arch 90] [--kernels w4a16,w4a16-m64,w4a16-m128,w4a16-gemv,w4a16-strip,...]

Counts are static (instructions in the program text, once per unrolled copy), not executed instructions.
Integer arguments are compiled as multiples of 16, as Triton specializes them at run time for real shapes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import triton
from triton.backends import nvidia as nvidia_backend
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.decode_attention import _decode_attention_kernel, kernel_config
from kernels.int4_layout import QUAD_BLOCK
from kernels.sparse24 import _sparse24_kernel
from kernels.sparse24_layout import PAIR_BLOCK
from kernels.w4a16 import _w4a16_kernel
from kernels.w4a16_gemv import _w4a16_gemv_kernel
from kernels.w4a16_strip_gemv import _w4a16_strip_kernel
from kernels.w8a8 import _scaled_matmul_kernel
from kernels.w8a8_tma import _scaled_matmul_tma_kernel

PTX_PATTERNS = {
    "st_shared": r"\bst\.shared",
    "ld_shared": r"\bld\.shared",
    "ldmatrix": r"\bldmatrix",
    "wgmma": r"\bwgmma\.mma_async",
    "mma_sync": r"\bmma\.sync",
    "cp_async": r"\bcp\.async\.(?:ca|cg)\b",
    "cvt": r"\bcvt\.",
    "shfl": r"\bshfl\.sync",
    "gdc_wait": r"\bgriddepcontrol\.wait",  # dependent launch (kernels/dependent_launch.py)
    "gdc_launch": r"\bgriddepcontrol\.launch_dependents",
    # acquire-release atomics: each waits a round trip to L2 before the thread goes on (split-K counts in with one)
    "acq_rel": r"\batom(?:\.\w+)*\.acq_rel\b",
}


@dataclass
class Census:
    kernel: str
    config: dict
    shared_bytes: int
    mma_a_in_registers: bool  # Hopper: the first operand of every warp_group_dot is a register tensor
    counts: dict
    loop_instructions: int  # SASS instructions in the longest loop body
    loop_instructions_per_weight: float  # ... per weight a thread consumes in one trip of that loop
    spill_stores: int  # STL in the SASS: registers spilled to local memory
    registers: int | None  # per thread (with the warps, what bounds how many programs share an SM)
    loads_before_wait: int | None  # global loads issued before waiting on the previous kernel (None: no wait)


@dataclass
class KernelSpec:
    fn: object
    pointers: dict[str, str]  # argument -> Triton pointer (or tensor descriptor, or float) type
    integers: list[str]
    constants: dict
    num_warps: int
    num_stages: int
    weights_per_trip: int  # weights one program consumes per trip of its main loop


def _specs() -> dict[str, KernelSpec]:
    """One representative config per kernel (the shapes the autotuners pick among on an H200)."""
    w4a16_pointers = {"x_ptr": "*bf16", "packed_ptr": "*i16", "scale_ptr": "*bf16", "zero_ptr": "*bf16",
                      "bias_ptr": "*bf16", "out_ptr": "*bf16", "sums_ptr": "*fp32", "arrivals_ptr": "*i32"}
    w4a16_flags = {"GROUP_SIZE": 128, "GROUP_NIBBLES": 4, "HAS_ZERO": False, "HAS_BIAS": False}
    tile_integers = ["M", "N", "K", "stride_xm", "stride_pk", "stride_sn", "stride_sg", "stride_zn", "stride_zg",
                     "stride_om"]

    def w4a16(block_m: int, block_n: int, split_k: int, warps: int, fp16: bool = False) -> KernelSpec:
        """bf16 symmetric, or fp16 with zero points (the other inline-assembly variant)."""
        pointers = ({**w4a16_pointers, "x_ptr": "*fp16", "scale_ptr": "*fp16", "zero_ptr": "*i8", "bias_ptr": "*fp16",
                     "out_ptr": "*fp16"} if fp16 else w4a16_pointers)
        return KernelSpec(_w4a16_kernel, pointers, [*tile_integers, "M_BUCKET"],
                          {**w4a16_flags, "HAS_ZERO": fp16, "FP16": fp16, "K_RAGGED": False,
                           "BLOCK_M": block_m, "BLOCK_N": block_n, "SPLIT_K": split_k, "UPCAST": False}, warps, 3,
                          block_n * QUAD_BLOCK)

    def w8a8(dtype: str, weight: str | None = None, swap: bool = False) -> KernelSpec:
        """Both operands of `dtype`, or weight-only: bf16 x and `weight` (u8: FP8 read as bytes, before sm_89),
        with `swap` a transposed tile (the widened weight as the MMA's first operand)."""
        pointers = {"x_ptr": f"*{dtype}", "xs_ptr": "*fp32", "w_ptr": f"*{weight or dtype}", "ws_ptr": "*fp32",
                    "bias_ptr": "*bf16", "out_ptr": "*bf16", "sums_ptr": "*fp32", "arrivals_ptr": "*i32"}
        tile = {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4} if swap else {"BLOCK_M": 128, "BLOCK_N": 128,
                                                                              "num_warps": 8}
        warps = tile.pop("num_warps")
        return KernelSpec(_scaled_matmul_kernel, pointers,
                          ["M", "N", "K", "stride_xm", "stride_wn", "stride_om", "M_BUCKET"],
                          {"HAS_X_SCALE": weight is None, "HAS_BIAS": False, "UPCAST": False, **tile, "BLOCK_K": 128,
                           "SPLIT_K": 1, "GROUP_M": 8, "SWAP_AB": swap}, warps, 3, tile["BLOCK_N"] * 128)

    def sparse24(int4: bool) -> KernelSpec:
        pointers = {"x_ptr": "*bf16", "words_ptr": "*i8" if int4 else "*i32", "positions_ptr": "*i8",
                    "scale_ptr": "*bf16", "bias_ptr": "*bf16", "out_ptr": "*bf16", "sums_ptr": "*fp32",
                    "arrivals_ptr": "*i32"}
        integers = ["M", "N", "K", "stride_xm", "stride_wk", "stride_pk", "stride_sn", "stride_sg", "stride_om",
                    "M_BUCKET"]
        return KernelSpec(_sparse24_kernel, pointers, integers,
                          {"INT4": int4, "GROUP_SIZE": 128, "HAS_BIAS": False, "K_RAGGED": False,
                           "BLOCK_M": 64, "BLOCK_N": 128, "SPLIT_K": 1, "UPCAST": False}, 8, 3, 128 * PAIR_BLOCK)

    attention_pointers = {"q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "mask_ptr": "*u8", "out_ptr": "*bf16",
                          "partial_ptr": "*fp32", "lse_ptr": "*fp32", "arrivals_ptr": "*i32", "scale_log2": "fp32"}
    attention_integers = ["kv_heads", "length", "blocks_per_slice", "slices", "stride_qb", "stride_qh", "stride_qd",
                          "stride_kb", "stride_kh", "stride_kn", "stride_kd", "stride_vb", "stride_vh", "stride_vn",
                          "stride_vd", "stride_mb", "stride_mn", "stride_ob", "stride_oh", "stride_od"]
    def attention(group: int, head_dim: int) -> KernelSpec:
        """The decode attention kernel as its launcher configures it for these heads."""
        config = kernel_config(group, head_dim)
        warps = config.pop("num_warps")
        return KernelSpec(_decode_attention_kernel, attention_pointers, attention_integers,
                          {**config, "HAS_MASK": True, "UPCAST": False}, warps, 3, config["BLOCK_N"] * head_dim * 2)

    return {
        "decode-attention": attention(4, 128),  # Llama-3 8B and 70B's heads: 4 (8) query heads per KV head
        "decode-attention-d256": attention(2, 256),  # Gemma 3's head size
        "decode-attention-group64": attention(64, 128),  # one KV head for 64 query heads
        "w4a16": w4a16(16, 256, 4, 4),
        "w4a16-m64": w4a16(64, 128, 1, 4),
        "w4a16-m128": w4a16(128, 128, 1, 8),
        "w4a16-fp16-zero": w4a16(16, 256, 4, 4, fp16=True),
        "w4a16-gemv": KernelSpec(_w4a16_gemv_kernel, {**w4a16_pointers, "packed_ptr": "*i32"}, tile_integers,
                                 {**w4a16_flags, "GATED": False, "PAIRED": True, "X_MASKED": False, "BLOCK_N": 64,
                                  "BLOCK_K": 64, "SPLIT_K": 16, "STAGES": 0}, 2, 3, 64 * 64),
        "w4a16-strip": KernelSpec(_w4a16_strip_kernel, {**w4a16_pointers, "packed_ptr": "*i32"}, tile_integers,
                                  {**w4a16_flags, "GATED": False, "PAIRED": True, "X_MASKED": False,
                                   "PAIR_MASKED": False, "PAIRS": 128, "SEG": 32, "SPLIT_K": 32},
                                  1, 3, 128 * 8 * 32),
        "w8a8-int8": w8a8("i8"),
        "w8a8-fp8": w8a8("fp8e4nv"),
        "w8a16-fp8-bytes": w8a8("bf16", weight="u8"),
        "w8a16-int8": w8a8("bf16", weight="i8"),
        "w8a16-int8-transposed": w8a8("bf16", weight="i8", swap=True),
        "2of4": sparse24(int4=False),
        "2of4-w4a16": sparse24(int4=True),
        "w8a8-tma-fp8": KernelSpec(_scaled_matmul_tma_kernel, {
            "x_desc": "tensordesc<fp8e4nv[128, 128]>", "w_desc": "tensordesc<fp8e4nv[256, 128]>", "xs_ptr": "*fp32",
            "ws_ptr": "*fp32", "bias_ptr": "*bf16", "out_ptr": "*bf16", "sums_ptr": "*fp32", "arrivals_ptr": "*i32"},
            ["M", "N", "K", "stride_om", "M_BUCKET"],
            {"INT8": False, "HAS_BIAS": False, "UPCAST": False, "BLOCK_M": 128, "BLOCK_N": 256,
             "BLOCK_K": 128, "GROUP_M": 8, "SPLIT_K": 1}, 8, 4, 256 * 128),
    }


def census(name: str, spec: KernelSpec, arch: int) -> Census:
    """Compile `spec` for sm_`arch` (no GPU involved) and count its PTX. Kernels that can launch dependent on
    their predecessor do so where the architecture has it (Hopper on)."""
    fn = spec.fn
    if "DEPENDENT" in fn.arg_names:
        spec = replace(spec, constants={**spec.constants, "DEPENDENT": arch >= 90})
    signature = {**spec.pointers, **dict.fromkeys(spec.integers, "i32"), **dict.fromkeys(spec.constants, "constexpr")}
    aligned = [*(argument for argument, kind in spec.pointers.items() if kind.startswith("*")),
               *(argument for argument in spec.integers if argument != "M")]
    source = ASTSource(fn=fn, signature=signature,
                       constexprs={(fn.arg_names.index(k),): v for k, v in spec.constants.items()},
                       attrs={(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in aligned})
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
    ptx, ttgir = compiled.asm["ptx"], compiled.asm["ttgir"]
    # "ttng.warp_group_dot %a, %b, %c {...} : <type of a> * <type of b> -> <type of the result>"
    first_operand_types = [line.split(" * ")[0].rsplit(" : ", 1)[-1].strip()
                           for line in ttgir.splitlines() if "ttng.warp_group_dot " in line]
    loop = longest_loop(compiled.asm["sass"])
    return Census(kernel=name, config={**spec.constants, "num_warps": spec.num_warps, "num_stages": spec.num_stages},
                  shared_bytes=int(compiled.metadata.shared),
                  mma_a_in_registers=bool(first_operand_types)
                  and all(operand.startswith("tensor<") for operand in first_operand_types),
                  counts={key: len(re.findall(pattern, ptx)) for key, pattern in PTX_PATTERNS.items()},
                  loop_instructions=loop,
                  loop_instructions_per_weight=round(loop * 32 * spec.num_warps / spec.weights_per_trip, 2),
                  spill_stores=len(re.findall(r"\bSTL\b", compiled.asm["sass"])),
                  registers=registers(compiled.asm["cubin"]),
                  loads_before_wait=loads_before_wait(ptx))


def loads_before_wait(ptx: str) -> int | None:
    """Global loads in the PTX before its first griddepcontrol.wait: what a dependent launch reads while the
    previous kernel may still be running (None where the kernel does not wait)."""
    head, found, _ = ptx.partition("griddepcontrol.wait")
    return len(re.findall(r"\bld\.global", head)) if found else None


def registers(cubin: bytes) -> int | None:
    """Registers per thread of the kernel in `cubin`, read by the cuobjdump that ships with Triton's NVIDIA
    backend (None where it does not)."""
    cuobjdump = Path(nvidia_backend.__file__).parent / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", file.name], capture_output=True, text=True)
    found = re.search(r"\bREG:(\d+)", usage.stdout)
    return int(found.group(1)) if found else None


def longest_loop(sass: str) -> int:
    """Instructions from a label to the furthest branch back to it, in Triton's SASS listing (labels "LBBn:" on
    their own lines, one instruction per other line)."""
    lines = [line.strip() for line in sass.splitlines() if line.strip()]
    labels = {line[:-1]: index for index, line in enumerate(lines) if re.fullmatch(r"\.?L\w+:", line)}
    longest = 0
    for index, line in enumerate(lines):
        target = re.search(r"\bBRA\s+`?\(?(\.?L\w+)", line)
        if target and labels.get(target.group(1), index) < index:
            start = labels[target.group(1)]
            longest = max(longest, sum(1 for between in lines[start + 1:index + 1] if not between.endswith(":")))
    return longest


def main(argv: list[str] | None = None) -> list[Census]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    specs = _specs()
    parser.add_argument("--arch", type=int, default=90, help="compute capability to compile for (90 = Hopper)")
    parser.add_argument("--kernels", default=",".join(specs))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    unknown = [name for name in args.kernels.split(",") if name not in specs]
    if unknown:
        parser.error(f"unknown kernels {unknown}; known: {', '.join(specs)}")
    rows = [census(name, specs[name], args.arch) for name in args.kernels.split(",")]
    print(f"{'kernel':<16} {'smem B':>7} {'A in regs':>9} " + " ".join(f"{key:>9}" for key in PTX_PATTERNS)
          + f" {'loop SASS':>9} {'per weight':>10} {'spills':>6} {'regs':>5} {'ld<wait':>7}")
    for row in rows:
        print(f"{row.kernel:<16} {row.shared_bytes:>7} {'yes' if row.mma_a_in_registers else 'no':>9} "
              + " ".join(f"{row.counts[key]:>9}" for key in PTX_PATTERNS)
              + f" {row.loop_instructions:>9} {row.loop_instructions_per_weight:>10} {row.spill_stores:>6}"
              + f" {row.registers if row.registers is not None else '-':>5}"
              + f" {row.loads_before_wait if row.loads_before_wait is not None else '-':>7}")
    date = datetime.date.today().isoformat()
    result = {"benchmark": "ptx_census", "date": date, "arch": f"sm_{args.arch}", "triton": triton.__version__,
              "rows": [asdict(row) for row in rows]}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ptx_census-sm{args.arch}-{date}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
