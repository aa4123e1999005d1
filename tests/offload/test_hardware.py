"""Hardware profiles: every shipped file loads, editing a copy works, bad files are rejected by field."""

from __future__ import annotations

import json

import pytest

from samoyeds_lab.offload.hardware import (
    KINDS,
    REQUIRED_BY_KIND,
    SCHEMA_VERSION,
    HardwareProfile,
    list_profiles,
    load_profile,
    profiles_dir,
)

SHIPPED = list_profiles()
EXPECTED = {
    "h100_sxm", "h100_pcie", "h200", "a100_sxm", "rtx_4090", "rtx_4070_super",
    "host_ddr5", "pcie4_x16", "pcie5_x16", "cxl_ndp_monde",
}


def _raw(name: str) -> dict:
    return json.loads((profiles_dir() / f"{name}.json").read_text())


def test_issue_profiles_are_shipped():
    assert EXPECTED <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_and_cites_source(name):
    p = load_profile(name)
    raw = _raw(name)
    assert raw["schema_version"] == SCHEMA_VERSION
    assert p.kind in KINDS
    assert len(p.source) > 10
    for f in REQUIRED_BY_KIND[p.kind]:
        assert getattr(p, f) > 0
    if p.link is not None:  # the named link profile exists
        assert load_profile(p.link).kind == "link"
    assert HardwareProfile.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    "name, tflops, sparse, mem, bw",
    [
        ("h100_sxm", 989.5, 1979, 80, 3350),
        ("h100_pcie", 756.5, 1513, 80, 2000),
        ("h200", 989.5, 1979, 141, 4800),
        ("a100_sxm", 312, 624, 80, 2039),
        ("rtx_4090", 165.2, 330.4, 24, 1008),
    ],
)
def test_datasheet_figures(name, tflops, sparse, mem, bw):
    p = load_profile(name)
    assert (p.fp16_tflops, p.fp16_sparse_tflops, p.memory_gb, p.memory_bandwidth_gbs) == (
        tflops, sparse, mem, bw,
    )


def test_si_accessors():
    p = load_profile("h100_sxm")
    assert p.flops == 989.5e12 and p.sparse_flops == 1979e12
    assert p.memory_bytes == 80e9 and p.memory_bandwidth == 3350e9 and p.link_bandwidth == 64e9
    with pytest.raises(ValueError, match="fp16_sparse_tflops"):
        load_profile("host_ddr5").sparse_flops


def test_edit_copy_in_tmp_path(tmp_path):
    raw = _raw("rtx_4090")
    raw["memory_bandwidth_gbs"] = 1200.0
    raw["name"] = "my overclocked 4090"
    path = tmp_path / "my_4090.json"
    path.write_text(json.dumps(raw))
    p = load_profile(path)
    assert p.memory_bandwidth_gbs == 1200.0 and p.name == "my overclocked 4090"
    assert load_profile(str(path)) == p
    # by name from a directory of the learner's own
    assert list_profiles(tmp_path) == ["my_4090"]
    assert load_profile("my_4090", directory=tmp_path) == p


def test_save_round_trip(tmp_path):
    p = load_profile("cxl_ndp_monde")
    assert load_profile(p.save(tmp_path / "x.json")) == p


def test_env_dir(tmp_path, monkeypatch):
    (tmp_path / "only.json").write_text(json.dumps(_raw("pcie4_x16")))
    monkeypatch.setenv("SAMOYEDS_LAB_HARDWARE_DIR", str(tmp_path))
    assert list_profiles() == ["only"]


@pytest.mark.parametrize(
    "edit, field",
    [
        ({"memory_bandwidth_gbs": None}, "memory_bandwidth_gbs"),  # removed below
        ({"source": None}, "source"),
        ({"schema_version": None}, "schema_version"),
        ({"link_bandwidth_gbs": None}, "link_bandwidth_gbs"),
    ],
)
def test_missing_field_names_file_and_field(tmp_path, edit, field):
    raw = _raw("h100_sxm")
    for k in edit:
        raw.pop(k)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="missing field") as e:
        load_profile(path)
    assert "broken.json" in str(e.value) and repr(field) in str(e.value)


@pytest.mark.parametrize(
    "field, value, exc",
    [
        ("memory_bandwidth_gbs", -1.0, ValueError),
        ("link_bandwidth_gbs", 0, ValueError),
        ("fp16_tflops", float("nan"), ValueError),
        ("fp16_tflops", "989", TypeError),
        ("memory_gb", True, TypeError),
        ("fp16_sparse_tflops", 100.0, ValueError),  # sparse below dense
        ("kind", "tpu", ValueError),
        ("schema_version", 2, ValueError),
        ("source", "", TypeError),
        ("memroy_gb", 80, ValueError),  # typo: unknown field
    ],
)
def test_bad_value_rejected_with_field(tmp_path, field, value, exc):
    raw = _raw("h100_sxm")
    raw[field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError) as e:  # CorruptFileError is a ValueError
        load_profile(path)
    assert "bad.json" in str(e.value) and field in str(e.value)
    # the constructor raises the precise type
    if field != "memroy_gb":
        with pytest.raises(exc, match=field):
            HardwareProfile(**raw)


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="h100_sxm"):
        load_profile("h300")


def test_not_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="x.json"):
        load_profile(path)
    with pytest.raises(ValueError, match="JSON object"):
        HardwareProfile.from_dict([1, 2])
    with pytest.raises(TypeError, match="name_or_path"):
        load_profile(3)


def test_optional_fields_may_be_absent():
    p = HardwareProfile(name="link", kind="link", source="my measurement", link_bandwidth_gbs=25)
    assert p.fp16_tflops is None and p.link_bandwidth == 25e9


# ------------------------------------------------------------------ probed host
def test_sparse_below_dense_allowed_for_measured_hosts_only():
    p = HardwareProfile(name="probed", kind="host", source="probe", fp16_tflops=0.2, fp16_sparse_tflops=0.1,
                        memory_gb=16, memory_bandwidth_gbs=20)
    assert p.sparse_flops == 0.1e12
    with pytest.raises(ValueError, match="fp16_sparse_tflops"):
        HardwareProfile(name="g", kind="gpu", source="d", fp16_tflops=2, fp16_sparse_tflops=1, memory_gb=1,
                        memory_bandwidth_gbs=1, link_bandwidth_gbs=1)


def test_shipped_probed_profile_says_it_was_probed():
    p = load_profile("probed_2core_epyc")
    assert p.kind == "host" and "probed on this machine" in p.source and "MEASURED" in p.notes
    assert p.fp16_sparse_tflops > 0 and p.memory_bandwidth_gbs > 0


@pytest.fixture(scope="module")
def probe():
    from samoyeds_lab.offload.hardware import probe_host

    return probe_host(rows=256, cols=512, compute_tokens=16, bandwidth_bytes=1 << 24, repeats=1, threads=1)


def test_probe_host_measures_and_profiles(probe):
    import datetime

    from samoyeds_lab.kernels import cpu as ck

    p = probe.profile
    assert p.kind == "host" and "probed" in p.source and probe.date in p.source and ck.cpu_path().cpu in p.source
    datetime.date.fromisoformat(probe.date)
    assert p.memory_bandwidth_gbs == probe.read_bandwidth_gbs > 0
    assert p.fp16_tflops == probe.dense_tflops > 0 and p.fp16_sparse_tflops == probe.sparse_tflops > 0
    assert probe.dense_bytes == 256 * 512 * 2 and 0 < probe.compressed_bytes < 0.35 * probe.dense_bytes
    assert probe.threads == 1 and probe.shape == (256, 512) and probe.dtype == "bfloat16"
    assert HardwareProfile.from_dict(p.to_dict()) == p
    # it drives the cost model (as the near side, with the compressed bytes)
    from samoyeds_lab.offload.cost import crossover_tokens

    x = crossover_tokens("h100_pcie", p, 3 * 4096 * 14336, d_model=4096, near_sparse=True,
                         near_bytes=0.28 * 2 * 3 * 4096 * 14336)
    assert x == crossover_tokens("h100_pcie", p, 3 * 4096 * 14336, d_model=4096, near_sparse=True,
                                 near_bytes=0.28 * 2 * 3 * 4096 * 14336, method="brute_force")


@pytest.mark.parametrize("kw, name", [
    ({"rows": 100}, "rows"), ({"cols": 0}, "cols"), ({"pattern": "4:8"}, "pattern"),
    ({"dtype": "bf16"}, "dtype"), ({"compute_tokens": 0}, "compute_tokens"),
    ({"bandwidth_bytes": 10}, "bandwidth_bytes"), ({"repeats": 0}, "repeats"), ({"threads": 0}, "threads"),
])
def test_probe_host_bad_arguments(kw, name):
    from samoyeds_lab.offload.hardware import probe_host

    with pytest.raises(ValueError, match=name):
        probe_host(**kw)
