"""The C++ matrix-vector kernel: equal to its PyTorch reference and to ``F.linear`` for every shape (tails of
rows and columns included), and a model that uses it decodes as before, eagerly and compiled."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dev_deps import skip_or_fail
from scratchllm.generation import generate
from scratchllm.model import matvec as mv
from scratchllm.model import optimize_for_decoding, set_weight_layout, weight_layout
from scratchllm.model.matvec import MAX_ROWS, MatVecLinear, matvec, matvec_reference, use_matvec
from scratchllm.model.quantize import Int8Linear, quantize_for_decoding
from serving_doubles import spiky_model


@pytest.fixture(scope="module", autouse=True)
def kernel() -> None:
    """Every test here needs the kernel: built once; a machine that cannot build it skips (fails under CI)."""
    if not mv.matvec_available():
        skip_or_fail(f"the matrix-vector kernel is unavailable: {mv._build()}")


def test_reference_is_the_linear_product() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(3, 37), torch.randn(11, 37)
    torch.testing.assert_close(matvec_reference(x, w), F.linear(x, w), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, MAX_ROWS])
@pytest.mark.parametrize("shape", [(960, 576), (19, 37), (8, 8), (5, 3), (1, 20)])
def test_float32_kernel_equals_the_reference(rows: int, shape: tuple[int, int]) -> None:
    """Whole tiles of eight weight rows, the leftover rows, and columns past the last multiple of eight."""
    torch.manual_seed(rows * 1000 + shape[0])
    x, w = torch.randn(rows, shape[1]), torch.randn(*shape)
    got = matvec(x, w)
    assert got.shape == (rows, shape[0]) and got.dtype == torch.float32
    # Any order of k fp32 additions is within k * 2^-24 * sum|x_i w_i| of the exact dot product.
    exact = x.double() @ w.double().T
    bound = shape[1] * 2.0**-24 * (x.double().abs() @ w.double().abs().T)
    for name, y in [("kernel", got), ("reference", matvec_reference(x, w)), ("F.linear", F.linear(x, w))]:
        assert bool(((y.double() - exact).abs() <= bound).all()), name
    torch.testing.assert_close(got, F.linear(x, w), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("shape", [(77, 200), (300, 37), (3, 5)])
def test_bfloat16_kernel_accumulates_in_float32(rows: int, shape: tuple[int, int]) -> None:
    """bf16 in, bf16 out, fp32 sums: equal to the reference before its one rounding to bf16 (2^-8 relative).
    (300, 37): many tiles, so the prefetch runs ahead and stops at the end of each thread's rows."""
    torch.manual_seed(1)
    x, w = torch.randn(rows, shape[1]).bfloat16(), torch.randn(*shape).bfloat16()
    got = matvec(x, w)
    assert got.dtype == torch.bfloat16
    exact = x.float() @ w.float().T
    torch.testing.assert_close(got.float(), exact, rtol=2**-8, atol=1e-3)
    torch.testing.assert_close(got, matvec_reference(x, w), rtol=2**-7, atol=1e-2)


def test_kernel_refuses_what_it_cannot_compute() -> None:
    with pytest.raises(RuntimeError, match="x has 5 columns, weight has 6"):
        matvec(torch.randn(1, 5), torch.randn(3, 6))
    with pytest.raises(RuntimeError, match="x is Float, weight is BFloat16"):
        matvec(torch.randn(1, 6), torch.randn(3, 6).bfloat16())
    with pytest.raises(RuntimeError, match="x must be float32 or bfloat16, got Double"):
        matvec(torch.randn(1, 6).double(), torch.randn(3, 6).double())
    with pytest.raises(RuntimeError, match="float32, bfloat16 or int8 weights only, got Half"):
        matvec(torch.randn(1, 6), torch.randn(3, 6).half())
    with pytest.raises(RuntimeError, match=r"int8 weights need one scale per row \(3\)"):
        matvec(torch.randn(1, 6), torch.ones(3, 6, dtype=torch.int8), torch.ones(2))
    with pytest.raises(RuntimeError, match="scales go with int8 weights only"):
        matvec(torch.randn(1, 6), torch.randn(3, 6), torch.ones(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(300, 576), (19, 37)])
def test_int8_kernel_scales_each_row(dtype: torch.dtype, shape: tuple[int, int]) -> None:
    """int8 weights, one scale per row: the fp32 sum of exact products times the scale, in ``x``'s dtype."""
    torch.manual_seed(5)
    q = torch.randint(-127, 128, shape, dtype=torch.int8)
    scale = torch.rand(shape[0]) / 100
    x = torch.randn(3, shape[1]).to(dtype)
    got = matvec(x, q, scale)
    assert got.dtype == dtype and got.shape == (3, shape[0])
    exact = (x.double() @ q.double().T) * scale.double()
    bound = shape[1] * 2.0**-24 * (x.double().abs() @ q.double().abs().T) * scale.double()
    if dtype == torch.float32:
        assert bool(((got.double() - exact).abs() <= bound + exact.abs() * 2.0**-23).all())
    else:  # one rounding to bf16 at the end
        torch.testing.assert_close(got.double(), exact, rtol=2**-8, atol=1e-6)
    torch.testing.assert_close(got, matvec_reference(x, q, scale), rtol=2**-7 if dtype != torch.float32 else 1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_matvec_linear_keeps_the_linear_and_uses_torch_for_many_rows(bias: bool) -> None:
    torch.manual_seed(2)
    linear = nn.Linear(24, 10, bias=bias)
    linear.weight.data = linear.weight.data.t().contiguous().t()  # column-major, as optimize_for_decoding leaves it
    layer = MatVecLinear(linear)
    assert layer.weight is linear.weight and layer.weight.is_contiguous()  # the same parameter, row-major again
    for shape in [(1, 1, 24), (2, 3, 24), (4, 5, 24)]:  # 1 and 6 rows: the kernel; 20 rows: F.linear
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), linear(x), rtol=1e-5, atol=1e-6)
    # With gradients recorded (the weights train), F.linear: the same gradients as the plain layer.
    x = torch.randn(1, 24)
    layer(x).square().sum().backward()
    grad = linear.weight.grad.clone()
    linear.weight.grad = None
    linear(x).square().sum().backward()
    torch.testing.assert_close(grad, linear.weight.grad)


@pytest.mark.parametrize("family", ["gpt", "llama"])
@pytest.mark.parametrize("tie", [True, False])
def test_a_model_with_the_kernel_gives_the_same_logits_and_tokens(family: str, tie: bool) -> None:
    model = spiky_model(family, seed=3, tie_embeddings=tie)
    idx = torch.randint(0, 257, (2, 9))
    prompts = [[5, 9, 2], [7, 1, 4, 4, 8, 30, 2], [11]]
    with torch.no_grad():
        reference = model(idx)
    tokens = generate(model, prompts, 30)
    assert use_matvec(model) is model
    assert not any(type(m) is nn.Linear for m in model.modules())
    if tie:
        assert model.lm_head.weight is model.tok_emb.weight  # still one tensor
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference, rtol=1e-5, atol=1e-4)
    assert generate(model, prompts, 30) == tokens


def test_the_kernels_weights_are_never_transposed_for_mkl() -> None:
    """``optimize_for_decoding(kernel=True)`` hands fp32 linears to the kernel before it lays out the rest
    column-major: a tied head's matrix (the embedding's table too) keeps its storage, and a later layout
    change leaves every weight the kernel reads row-major."""
    model = spiky_model("gpt", seed=3, tie_embeddings=True)
    storage = model.lm_head.weight.data_ptr()
    assert optimize_for_decoding(model, kernel=True) is model and isinstance(model.lm_head, MatVecLinear)
    assert model.tok_emb.weight.data_ptr() == storage and weight_layout(model.tok_emb.weight) == "row"
    assert weight_layout(model.pos_emb.weight) == "column"  # not the kernel's: MKL's fp32 layout as before
    set_weight_layout(model, "column")
    assert all(weight_layout(m.weight) == "row" for m in model.modules() if isinstance(m, MatVecLinear))


def test_compiled_steps_call_the_kernel_and_decode_the_same_tokens() -> None:
    model = spiky_model("llama", seed=3)
    prompts = [[7], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
    eager = generate(model, prompts, 24)
    use_matvec(model)
    assert generate(model, prompts, 24, compile=True) == eager


def test_an_unavailable_kernel_is_announced_once_and_changes_nothing(monkeypatch, capsys) -> None:
    monkeypatch.setenv(mv.DISABLE_ENV, "1")
    monkeypatch.setattr(mv, "_announced", [])
    mv._build.cache_clear()
    try:
        model = spiky_model("gpt", seed=3, tie_embeddings=False)
        assert use_matvec(model) is model and not any(isinstance(m, MatVecLinear) for m in model.modules())
        use_matvec(model)
        err = capsys.readouterr().err
        assert err.count("matrix-vector kernel is off") == 1 and "SCRATCHLLM_NO_MATVEC is set" in err
    finally:
        mv._build.cache_clear()


def test_int8_linears_switch_to_the_kernel_for_few_rows() -> None:
    """``use_matvec`` turns on the kernel of every Int8Linear: one token's product equals PyTorch's int8 kernel
    within bf16 rounding; a prompt's rows still take PyTorch's kernel."""
    torch.manual_seed(6)
    model = quantize_for_decoding(spiky_model("llama", seed=3), "int8")
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert layers and all(m.kernel for m in layers)
    layer = layers[0]
    for rows in (1, MAX_ROWS, MAX_ROWS + 1):
        x = torch.randn(rows, layer.in_features).bfloat16()
        layer.kernel = False
        torch_y = layer(x)
        layer.kernel = True
        torch.testing.assert_close(layer(x).float(), torch_y.float(), rtol=2**-7, atol=1e-2)
        exact = x.double() @ layer.dequantized().double().T
        torch.testing.assert_close(layer(x).double(), exact, rtol=2**-7, atol=1e-2)
