"""One colour, one concept: the formats and systems own their hues across every figure module (issue 14)."""

import re

import pytest

from samoyeds_lab.viz import accuracy, end_to_end, kernel_steps, kernels, moe_layer, monde, offload, sparsity
from samoyeds_lab.viz.palette import CATEGORICAL, CONCEPTS, FAMILIES, concept

#: The keys allowed to wear a concept's colour (the concept under its other names).
ALLOWED = {
    "dense": {"dense", "none", "resident"},
    "2:4": {"nm", "spmm", "spmm_24", "2:4"},
    "samoyeds": {"samoyeds", "ssmm"},
    "venom": {"venom"},
    "unstructured": {"csr", "unstructured"},
    "sida": {"sida"},
    "monde": {"monde", "near"},
    "offloaded": {"offloaded"},
    "samoyeds_offloaded": {"samoyeds_offloaded"},
}

TABLES = {
    "sparsity.COLORS": sparsity.COLORS,
    "kernels.KERNEL_COLORS": kernels.KERNEL_COLORS,
    "moe_layer.MOE_COLORS": moe_layer.MOE_COLORS,
    "monde.MONDE_COLORS": monde.MONDE_COLORS,
    "offload.POLICY_COLORS": offload.POLICY_COLORS,
    "offload._BREAKDOWN": {k: c for k, c, _ in offload._BREAKDOWN},
    "end_to_end.E2E_COLORS": end_to_end.E2E_COLORS,
    "end_to_end.POLICY_COLORS": end_to_end.POLICY_COLORS,
    "end_to_end.MORE_COLORS": end_to_end.MORE_COLORS,
    "end_to_end._PARTS": {k.removesuffix("_ms"): c for k, _, c in end_to_end._PARTS},
    "accuracy.ACCURACY_COLORS": accuracy.ACCURACY_COLORS,
    "kernel_steps._BYTE_PARTS": {k: c for k, _, c in kernel_steps._BYTE_PARTS},
    **{f"palette.FAMILIES[{f!r}]": d for f, d in FAMILIES.items()},
}
HEX = re.compile(r"^#[0-9a-f]{6}$")


def test_every_concept_has_its_own_hue():
    assert set(ALLOWED) == set(CONCEPTS)
    assert len(set(CONCEPTS.values())) == len(CONCEPTS)
    assert all(HEX.match(c) for c in CONCEPTS.values())


@pytest.mark.parametrize("table", sorted(TABLES))
def test_a_concept_colour_is_worn_only_by_that_concept(table):
    owner = {c: name for name, c in CONCEPTS.items()}
    wrong = {k: owner[c.lower()] for k, c in TABLES[table].items() if c.lower() in owner and k not in ALLOWED[owner[c.lower()]]}
    assert not wrong, f"{table}: keys wearing another concept's colour: {wrong}"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_the_concept_keys_wear_their_concept(table):
    for k, c in TABLES[table].items():
        for name, keys in ALLOWED.items():
            if k in keys:
                assert c.lower() == CONCEPTS[name], f"{table}[{k!r}] = {c}, expected {name}'s {CONCEPTS[name]}"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_colours_differ_inside_a_family(family):
    cols = list(FAMILIES[family].values())
    assert len(set(cols)) == len(cols), f"{family}: {FAMILIES[family]}"


def test_same_system_same_colour_across_labs():
    # SiDA in Lab 06's policy charts and in Lab 08's; Samoyeds in Labs 01, 02, 04 and 08
    assert offload.POLICY_COLORS["sida"] == end_to_end.POLICY_COLORS["sida"] == CONCEPTS["sida"]
    assert (sparsity.COLORS["samoyeds"] == kernels.KERNEL_COLORS["ssmm"] == moe_layer.MOE_COLORS["samoyeds"]
            == end_to_end.E2E_COLORS["samoyeds"] == CONCEPTS["samoyeds"])
    assert offload._BREAKDOWN[0][1] == end_to_end._PARTS[0][2]  # "compute" is one colour in both labs


def test_concept_lookup():
    assert concept("ssmm") == concept("samoyeds") == CONCEPTS["samoyeds"]
    assert concept("nm") == CONCEPTS["2:4"]
    with pytest.raises(KeyError, match="name: expected one of"):
        concept("sparse")
    assert len(set(CATEGORICAL)) == len(CATEGORICAL)
