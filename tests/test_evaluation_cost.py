"""The cheap paths of training and evaluation give the same numbers as the plain ones: the output
softmax taken only at the targets (vae_lab/nets/output.py), and evaluation that encodes a batch once."""
import pytest
import torch
import torch.nn.functional as F

from tests.test_text import tiny_vae
from vae_lab.metrics.likelihood import importance_weighted_nll
from vae_lab.module import LatentVariableModule
from vae_lab.nets.output import target_log_prob


def layer_and_inputs(rows=37, hidden=16, vocab=101, seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(hidden, vocab)
    return layer, torch.randn(rows, hidden, requires_grad=True), torch.randint(0, vocab, (rows,))


def gradients(layer, hidden):
    return [t.grad.clone() for t in (hidden, layer.weight, layer.bias)]


def test_target_log_prob_equals_cross_entropy_and_its_gradients():
    layer, hidden, targets = layer_and_inputs()
    upstream = torch.randn(len(targets))
    expected = -F.cross_entropy(layer(hidden), targets, reduction="none")
    expected.backward(upstream)
    expected_grads = gradients(layer, hidden)
    for t in (hidden, layer.weight, layer.bias):
        t.grad = None
    got = target_log_prob(hidden, layer, targets)
    got.backward(upstream)
    torch.testing.assert_close(got, expected)
    for g, e in zip(gradients(layer, hidden), expected_grads):
        torch.testing.assert_close(g, e)


def test_evaluation_chunks_give_the_same_values():
    layer, hidden, targets = layer_and_inputs(rows=50)
    with torch.no_grad():
        whole = target_log_prob(hidden, layer, targets, max_logits=10**9)
        chunked = target_log_prob(hidden, layer, targets, max_logits=3 * 101)  # chunks of 3 rows
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(whole, -F.cross_entropy(layer(hidden), targets, reduction="none").detach())


def test_bf16_autocast_runs_the_gemms_in_bf16_and_stays_close():
    layer, hidden, targets = layer_and_inputs(rows=64, hidden=32, vocab=500)
    exact = target_log_prob(hidden, layer, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = target_log_prob(hidden, layer, targets)
        reference = -F.cross_entropy(layer(hidden), targets, reduction="none")  # autocast's own linear
    assert low.dtype == torch.float32
    assert not torch.equal(low, exact)  # the GEMM really ran in bf16
    torch.testing.assert_close(low, reference.float(), atol=1e-2, rtol=1e-2)
    assert float((low - exact).detach().abs().mean()) < 0.02  # bf16 logits: ~3 significant digits
    low.sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and torch.isfinite(layer.weight.grad).all()


def test_evaluation_encodes_each_batch_once_and_agrees_with_reencoding():
    model = tiny_vae().eval()
    batch = {"tokens": torch.tensor([[4, 5, 6], [7, 4, 0]]), "lengths": torch.tensor([3, 2])}
    calls = []
    encode = model.posterior_params
    model.posterior_params = lambda b: calls.append(1) or encode(b)
    module = LatentVariableModule(model, optimizer=None, kl_weight_schedule=lambda step: 1.0, val_samples=7,
                                  chunk_size=2, chunk_units=None, text_metrics=False)
    module._eval_step(batch, 0, "val")
    assert len(calls) == 1  # the ELBO parts, 4 chunks of IW draws and the posterior metrics: one encoding
    assert float(module.eval_sums["val"]["count"].compute()) == 2
    torch.manual_seed(3)
    with torch.no_grad():
        encoded = model.log_weights(batch, 1).encoded
    torch.manual_seed(4)
    once = importance_weighted_nll(model, batch, 9, 4, encoded)
    torch.manual_seed(4)
    again = importance_weighted_nll(model, batch, 9, 4)
    torch.testing.assert_close(once, again)


def test_token_budget_sets_draws_per_pass():
    model = tiny_vae().eval()
    batch = {"tokens": torch.tensor([[4, 5, 6], [7, 4, 0]]), "lengths": torch.tensor([3, 2])}  # 7 target tokens
    sizes = []
    log_weights = model.log_weights
    model.log_weights = lambda b, k, encoded=None: sizes.append(k) or log_weights(b, k, encoded)
    module = LatentVariableModule(model, optimizer=None, kl_weight_schedule=lambda step: 1.0, val_samples=10,
                                  chunk_size=50, chunk_units=21, text_metrics=False)
    module._eval_step(batch, 0, "val")
    assert sizes == [1, 3, 3, 3, 1]  # the ELBO at k = 1, then 21 // 7 = 3 draws a pass
