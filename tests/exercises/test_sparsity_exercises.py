"""The lab-01 exercise checkers: True for correct answers, False (with mismatch output) otherwise,
and never an exception caused by the learner's code."""

import pytest
import torch

from samoyeds_lab.exercises import check_decode_word, check_mask_24
from samoyeds_lab.exercises.sparsity import example_matrix, example_words, solution_decode_word, solution_mask_24


# ---------------------------------------------------------------------------------------------- references
def mask_24_loop(w):
    """Plain-Python reference: keep the 2 largest |w| of every 4 consecutive elements of a row."""
    out = torch.zeros(w.shape, dtype=torch.bool)
    for r in range(w.shape[0]):
        for g in range(0, w.shape[1], 4):
            order = sorted(range(4), key=lambda i: -abs(float(w[r, g + i])))
            for i in order[:2]:
                out[r, g + i] = True
    return out


def mask_24_float(w):
    """Correct answer returned as a 0/1 float tensor (accepted)."""
    return mask_24_loop(w).float()


def decode_loop(word):
    pairs = []
    for j in range(8):
        nib = (word >> (4 * j)) & 0xF
        pairs.append((nib & 3, nib >> 2))
    return pairs


def decode_tensor(word):
    return torch.tensor(decode_loop(word), dtype=torch.int64)


# ---------------------------------------------------------------------------------------------- exercise 1
@pytest.mark.parametrize("fn", [mask_24_loop, mask_24_float], ids=["bool", "float01"])
def test_mask_24_correct(fn, capsys):
    assert check_mask_24(fn) is True
    assert "solved" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fn, expect",
    [
        (lambda w: _smallest_two(w), "mismatch"),
        (lambda w: _signed_top2(w), "mismatch"),
        (lambda w: torch.ones_like(w, dtype=torch.bool), "keeps 4 values"),
        (lambda w: mask_24_loop(w)[:, :4], "shape"),
        (lambda w: mask_24_loop(w).tolist(), "torch.Tensor"),
        (lambda w: mask_24_loop(w).float() * 3, "0/1"),
    ],
    ids=["smallest", "signed", "all-ones", "bad-shape", "not-tensor", "not-binary"],
)
def test_mask_24_wrong(fn, expect, capsys):
    assert check_mask_24(fn) is False
    out = capsys.readouterr().out
    assert expect in out
    assert "❌" in out


def _smallest_two(w):
    g = w.abs().reshape(w.shape[0], -1, 4)
    idx = g.topk(2, dim=-1, largest=False).indices
    return torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True).reshape(w.shape)


def _signed_top2(w):
    g = w.reshape(w.shape[0], -1, 4)
    idx = g.topk(2, dim=-1).indices
    return torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True).reshape(w.shape)


def test_mask_24_mismatch_output_shows_yours_expected_and_mask(capsys):
    assert check_mask_24(_smallest_two) is False
    out = capsys.readouterr().out
    for word in ("yours", "expected", "mismatch", "X"):
        assert word in out


def test_mask_24_stub_is_not_yet_solved(capsys):
    def stub(w):
        # TODO
        raise NotImplementedError

    assert check_mask_24(stub) is False
    assert "not yet solved" in capsys.readouterr().out


def test_mask_24_other_exception_is_reported(capsys):
    assert check_mask_24(lambda w: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_mask_24_in_place_modification_is_reported(capsys):
    def mutating(w):
        m = mask_24_loop(w)
        w.mul_(m)
        return m

    assert check_mask_24(mutating) is False
    assert "modified its input" in capsys.readouterr().out


def test_mask_24_rejects_non_callable():
    with pytest.raises(TypeError, match="fn"):
        check_mask_24(3)


def test_example_matrix_has_distinct_magnitudes():
    w = example_matrix()
    assert w.shape == (4, 8)
    assert w.abs().unique().numel() == w.numel()
    assert (w < 0).any() and (w > 0).any()


# ---------------------------------------------------------------------------------------------- exercise 2
@pytest.mark.parametrize("fn", [decode_loop, decode_tensor], ids=["list", "tensor"])
def test_decode_correct(fn, capsys):
    assert check_decode_word(fn) is True
    assert "solved" in capsys.readouterr().out


@pytest.mark.parametrize(
    "fn, expect",
    [
        (lambda word: [(p1, p0) for p0, p1 in decode_loop(word)], "differ"),  # fields swapped
        (lambda word: decode_loop(word)[::-1], "differ"),  # groups reversed
        (lambda word: decode_loop(word)[:7], "8 pairs"),
        (lambda word: "nope", "8 pairs"),
        (lambda word: [((word >> (2 * j)) & 3, (word >> (2 * j + 1)) & 3) for j in range(8)], "differ"),
    ],
    ids=["swapped", "reversed", "seven", "string", "wrong-shift"],
)
def test_decode_wrong(fn, expect, capsys):
    assert check_decode_word(fn) is False
    out = capsys.readouterr().out
    assert expect in out
    assert "❌" in out


def test_decode_mismatch_table(capsys):
    check_decode_word(lambda word: [(p1, p0) for p0, p1 in decode_loop(word)])
    out = capsys.readouterr().out
    assert "yours" in out and "expected" in out and "mismatch" in out and " X" in out


def test_decode_stub_is_not_yet_solved(capsys):
    def stub(word):
        # TODO
        raise NotImplementedError

    assert check_decode_word(stub) is False
    assert "not yet solved" in capsys.readouterr().out


def test_example_words_are_legal_ordered_metadata():
    legal = {0x4, 0x8, 0xC, 0x9, 0xD, 0xE}
    for word in example_words():
        assert 0 <= word < 2**32
        assert {(word >> (4 * j)) & 0xF for j in range(8)} <= legal


def test_example_words_match_packed_metadata():
    """The decoder spec agrees with the library's packing (NMWeight.sptc_metadata)."""
    from samoyeds_lab.formats import compress_nm

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 64, generator=gen)
    nm = compress_nm(w * mask_24_loop(w))
    words = nm.sptc_metadata()
    for r in range(3):
        for k in range(2):
            pairs = decode_loop(int(words[r, k].item()))
            pos = nm.positions[r, 16 * k:16 * k + 16].tolist()
            assert pairs == [tuple(pos[2 * j:2 * j + 2]) for j in range(8)]


# ---------------------------------------------------------------------------------------------- the package's solutions
def test_solutions_pass_their_checks(capsys):
    assert check_mask_24(solution_mask_24) is True
    assert check_decode_word(solution_decode_word) is True
    out = capsys.readouterr().out
    assert out.count("✅ solved") == 2 and "not yet" not in out


def test_solutions_agree_with_the_library():
    """The mask solution is the library's 2:4 magnitude mask; the decoder inverts NMWeight's metadata packing."""
    from samoyeds_lab.formats import compress_nm
    from samoyeds_lab.prune import prune_mask

    gen = torch.Generator().manual_seed(3)
    for rows, cols in [(1, 4), (19, 36), (8, 64)]:
        w = torch.randn(rows, cols, generator=gen)
        original = w.clone()
        assert torch.equal(solution_mask_24(w), prune_mask(w, "2:4"))
        assert torch.equal(w, original)
    w = torch.randn(2, 64, generator=gen)
    nm = compress_nm(w * solution_mask_24(w))
    words = nm.sptc_metadata()
    for r in range(2):
        for k in range(2):
            pos = nm.positions[r, 16 * k:16 * k + 16].tolist()
            assert solution_decode_word(int(words[r, k].item())) == [tuple(pos[2 * j:2 * j + 2]) for j in range(8)]


def test_decode_other_exception_is_reported(capsys):
    assert check_decode_word(lambda word: {}["missing"]) is False
    out = capsys.readouterr().out
    assert "not yet solved" in out and "KeyError" in out


@pytest.mark.parametrize("bad", [3, "solution_decode_word", None])
def test_decode_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="fn: expected a function"):
        check_decode_word(bad)


# ---------------------------------------------------------------------------------------------- lab 02 (CPU kernels)
def test_cpu_kernel_exercises_fail_on_the_stub_and_pass_on_the_solution(capsys):
    from samoyeds_lab.bench.cpu import make_weights
    from samoyeds_lab.exercises.cpu_kernels import (
        check_decode_ceiling, check_unit_columns, solution_decode_ceiling, solution_unit_columns)
    from samoyeds_lab.kernels.cpu import cpu_operand

    def stub(*args):
        raise NotImplementedError

    assert not check_unit_columns(stub) and "not yet solved" in capsys.readouterr().out
    assert not check_decode_ceiling(stub) and "not yet solved" in capsys.readouterr().out
    assert check_unit_columns(solution_unit_columns) and check_decode_ceiling(solution_decode_ceiling)
    # a near miss: first and second positions swapped
    assert not check_unit_columns(lambda w: [4 * (v >> 1) + ((w >> ((1 - (v & 1)) * 16 + 2 * (v >> 1))) & 3)
                                             for v in range(16)])
    out = capsys.readouterr().out
    assert "mismatch" in out and "the dense unit is nonzero at columns" in out
    # a near miss: the metadata bits forgotten
    assert not check_decode_ceiling(lambda r, c, g: (r * c * 2 / g / 1e6, r * c / 2 / g / 1e6))
    assert "yours" in capsys.readouterr().out
    # the spec's byte count is what the kernel reads
    w = make_weights(256, 512, patterns=("samoyeds",))["samoyeds"]
    assert solution_decode_ceiling(256, 512, 1.0)[1] == pytest.approx(cpu_operand(w).nbytes / 1e6)
    with pytest.raises(TypeError, match="fn: expected a function"):
        check_unit_columns(3)


def test_unit_columns_are_where_the_dense_unit_is_nonzero():
    from samoyeds_lab.exercises.cpu_kernels import example_unit_words, solution_unit_columns

    for word, dense in example_unit_words():
        if dense is not None:
            cols = solution_unit_columns(word)
            assert set((dense != 0).nonzero().flatten().tolist()) <= set(cols)


# ---------------------------------------------------------------------------------------------- lab 07 (offload)
def test_offload_exercises_fail_on_the_stub_and_pass_on_the_solution(capsys):
    from samoyeds_lab.exercises.offload import (
        check_crossover, check_path_times, solution_crossover, solution_path_times)

    def stub(*args):
        raise NotImplementedError

    assert not check_path_times(stub) and not check_crossover(stub)
    assert capsys.readouterr().out.count("not yet solved") == 2
    assert check_path_times(solution_path_times) and check_crossover(solution_crossover)
    # near misses: the activations counted one way only; n* one too early
    assert not check_path_times(lambda n, P, d, g, m, link: (solution_path_times(n, P, d, g, m, link)[0],
                                                             solution_path_times(n, P, d, g, m, link)[1]
                                                             - n * d * 2 / (link * 1e9)))
    assert not check_crossover(lambda *a: (solution_crossover(*a) or 2) - 1)
    assert "yours" in capsys.readouterr().out
