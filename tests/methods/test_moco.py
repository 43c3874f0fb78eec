"""MoCo v2 / v3: losses against explicit loops, the queue (pointer, contents, wrap-around), the momentum update."""

import math

import torch
import torch.nn.functional as F

from medrobust.data.views import random_view
from medrobust.methods.contract import Encoders
from medrobust.methods.moco import (MoCoQueue, MoCoV2, MoCoV2Params, MoCoV3, image_fingerprint, moco_infonce,
                                   moco_v3_contrastive, same_image)
from medrobust.models.encoders import SmallCNN


def _encoder(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(1, 2, 28, [0.5], [0.25])


def test_moco_infonce_matches_explicit_loop():
    torch.manual_seed(0)
    t = 0.2
    q, k, queue = F.normalize(torch.randn(4, 6), dim=1), F.normalize(torch.randn(4, 6), dim=1), \
        F.normalize(torch.randn(9, 6), dim=1)
    total = 0.0
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[j]) / t) for j in range(9))
        total += -math.log(pos / (pos + neg))
    assert abs(moco_infonce(q, k, queue, t).item() - total / 4) < 1e-5


def test_moco_v3_contrastive_matches_explicit_loop_with_rank_offset():
    torch.manual_seed(1)
    q, k, t = torch.randn(3, 5), torch.randn(6, 5), 0.5  # 3 local queries, keys of a global batch of 6
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    for offset in (0, 3):
        total = 0.0
        for i in range(3):
            den = sum(math.exp(float(qn[i] @ kn[j]) / t) for j in range(6))
            total += -math.log(math.exp(float(qn[i] @ kn[i + offset]) / t) / den)
        assert abs(moco_v3_contrastive(q, k, t, offset).item() - 2 * t * total / 3) < 1e-5


def test_queue_enqueue_dequeue_pointer_and_wrap_around():
    queue = MoCoQueue(5, 3, torch.Generator().manual_seed(0))
    init = queue.queue.clone()
    assert torch.allclose(init.norm(dim=1), torch.ones(5)) and int(queue.queue_ptr) == 0
    a = torch.arange(6.0).view(2, 3)
    queue.enqueue(a)
    assert int(queue.queue_ptr) == 2
    assert torch.equal(queue.queue[:2], a) and torch.equal(queue.queue[2:], init[2:])
    b = 10 + torch.arange(12.0).view(4, 3)  # 4 keys from slot 2: slots 2, 3, 4, then wrap to 0
    queue.enqueue(b)
    assert int(queue.queue_ptr) == 1
    assert torch.equal(queue.queue[2:], b[:3]) and torch.equal(queue.queue[0], b[3])
    assert torch.equal(queue.queue[1], a[1])  # the oldest surviving key
    c = -torch.arange(21.0).view(7, 3)  # more keys than slots: the newest 5 are kept
    queue.enqueue(c)
    assert sorted(queue.queue[:, 0].tolist()) == sorted(c[2:, 0].tolist()) and int(queue.queue_ptr) == 1


def test_moco_v2_enqueues_the_batch_keys_only_in_training():
    enc = _encoder()
    method = MoCoV2(Encoders(enc), params=MoCoV2Params(queue_size=16), seed=0)  # symmetric: both views' keys
    x = torch.rand(4, 1, 28, 28)
    replay = torch.Generator().set_state(method.generator.get_state())
    v1, v2 = random_view(x, method.params.views, replay), random_view(x, method.params.views, replay)
    out = method({"image": x})
    assert torch.isfinite(out["loss"]) and int(method.queue.queue_ptr) == 8
    k1, k2 = method._key(torch.cat([v1, v2])).chunk(2)
    assert torch.allclose(method.queue.queue[:8], torch.cat([k2, k1]), atol=1e-5)
    assert torch.equal(method.queue.ids[:8], image_fingerprint(x).repeat(2))
    method.eval()
    method({"image": x})
    assert int(method.queue.queue_ptr) == 8


def test_fingerprints_identify_images():
    x = torch.rand(3, 1, 8, 8)
    a, b = image_fingerprint(x), image_fingerprint(torch.cat([x[2:], x[:2]]))
    assert a.dtype == torch.float64 and torch.equal(a[2], b[0]) and len(set(a.tolist())) == 3
    assert torch.equal(same_image(a, b), torch.tensor([[False, True, False], [False, False, True],
                                                          [True, False, False]]))
    assert not same_image(a, torch.tensor([float("nan")], dtype=torch.float64)).any()


def test_moco_v2_loss_excludes_the_query_images_own_keys():
    """Loss = InfoNCE against [queue; this step's keys] minus every key of the query's own image."""
    enc = _encoder()
    method = MoCoV2(Encoders(enc), params=MoCoV2Params(queue_size=6, symmetric=False), seed=0)
    x = torch.rand(3, 1, 28, 28)
    ids = image_fingerprint(x)
    old = F.normalize(torch.randn(2, 64), dim=1)
    method.queue.enqueue(old, ids[:2])  # stale keys of images 0 and 1 in slots 0, 1
    replay = torch.Generator().set_state(method.generator.get_state())
    v1, v2 = random_view(x, method.params.views, replay), random_view(x, method.params.views, replay)
    queue = method.queue.queue.clone()
    with torch.no_grad():
        loss = method({"image": x})["loss"]
        q, k = method._query(v1), method._key(v2)
    t, total = method.params.temperature, 0.0
    for i in range(3):
        negatives = [queue[j] for j in range(6) if j != i or i == 2] + [k[j] for j in range(3) if j != i]
        pos = math.exp(float(q[i] @ k[i]) / t)
        total += -math.log(pos / (pos + sum(math.exp(float(q[i] @ n) / t) for n in negatives)))
    assert abs(loss.item() - total / 3) < 1e-4


def test_moco_v2_momentum_update_and_no_gradient_into_key_encoder():
    enc = _encoder()
    method = MoCoV2(Encoders(enc), seed=0)
    assert method.image_encoder is enc and method.key_encoder is not enc
    assert all(not p.requires_grad for p in method.key_encoder.parameters())
    method({"image": torch.rand(4, 1, 28, 28)})["loss"].backward()
    assert all(p.grad is None for p in method.key_encoder.parameters())
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1)
    old = [p.clone() for p in method.key_encoder.parameters()]
    method.after_step()
    m = method.params.momentum
    for k, o, q in zip(method.key_encoder.parameters(), old, enc.parameters()):
        assert torch.allclose(k, m * o + (1 - m) * q, atol=1e-6)


def test_moco_v3_momentum_update_covers_encoder_and_projector():
    enc = _encoder(1)
    method = MoCoV3(Encoders(enc), seed=0)
    out = method({"image": torch.rand(6, 1, 28, 28)})
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    with torch.no_grad():
        for p in list(enc.parameters()) + list(method.projector.parameters()):
            p.add_(0.05)
    pairs = [(method.momentum_encoder, enc), (method.momentum_projector, method.projector)]
    old = [[p.clone() for p in t.parameters()] for t, _ in pairs]
    method.after_step()
    m = method.params.momentum
    for (teacher, student), olds in zip(pairs, old):
        for t, o, s in zip(teacher.parameters(), olds, student.parameters()):
            assert torch.allclose(t, m * o + (1 - m) * s, atol=1e-6)
