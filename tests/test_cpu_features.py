"""CPU feature detection from flag sets: what each CPU the project meets can run fast."""

import pytest

from ser_triton.export.cpu_features import CPUInfo, cpu_flags, has_bf16, has_vnni, isa
from ser_triton.export.precision import BF16, candidates, reduce_range
from ser_triton.core.specs import ACOUSTIC_ENCODER, ASR

SAPPHIRE_RAPIDS = ("fpu sse2 avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile "
                   "amx_int8 avx_vnni")
ICE_LAKE = "fpu sse2 avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_vbmi2 avx512_bitalg"
ZEN_3 = "fpu sse2 avx avx2 fma bmi2 sha_ni vaes"
ZEN_5 = "fpu avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni"


@pytest.mark.parametrize("flags, expected, bf16, vnni", [
    (SAPPHIRE_RAPIDS, ["amx", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2"], True, True),
    (ICE_LAKE, ["avx512_vnni", "avx512f", "avx2"], False, True),
    (ZEN_3, ["avx2"], False, False),
    (ZEN_5, ["avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2"], True, True),
    ("fpu sse2", [], False, False),
])
def test_isa_from_flags(flags, expected, bf16, vnni):
    found = isa(set(flags.split()))
    assert found == expected
    assert has_bf16(found) is bf16 and has_vnni(found) is vnni
    assert reduce_range(found) is (not vnni)  # 7-bit activations only where u8*s8 could saturate


def test_flags_are_read_from_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags("no flags here") == set()
    assert CPUInfo.read(text) == CPUInfo("Some CPU", frozenset({"fpu", "avx2", "avx512_vnni"}))  # bench/report.machine
    assert CPUInfo.read("no flags here") == CPUInfo()


@pytest.mark.parametrize("flags, has", [(SAPPHIRE_RAPIDS, True), (ICE_LAKE, False), (ZEN_3, False)])
def test_bf16_is_a_candidate_only_where_the_hardware_runs_it(flags, has):
    for network in (ACOUSTIC_ENCODER, ASR):
        names = [v.name for v in candidates(network, isa(set(flags.split())))]
        assert (BF16.name in names) is has
        assert names[0] == "fp32" and "int8" in names and "int8-static" in names
    assert "int8-static+fp32:ctc_head" in [v.name for v in candidates(ASR, [])]
