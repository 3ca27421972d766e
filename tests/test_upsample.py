import numpy as np
import pytest
import torch

from skimage import data

from m2n2.image import resize_rgb
from m2n2.upsample import apply_jbu_table, jbu_table, joint_bilateral_upsample


def plain_bilinear(low, height, width):
    """Pixel-centre bilinear upsampling: output pixel y samples input coordinate (y + 0.5) h / H - 0.5."""
    h, w = low.shape
    out = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            sy = max((y + 0.5) * h / height - 0.5, 0.0)
            sx = max((x + 0.5) * w / width - 0.5, 0.0)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            out[y, x] = ((1 - fy) * (1 - fx) * low[y0, x0] + (1 - fy) * fx * low[y0, x1]
                         + fy * (1 - fx) * low[y1, x0] + fy * fx * low[y1, x1])
    return out


def plain_jbu(low, guide, sigma_s, sigma_r):
    """Per-pixel transcription: bilinear upsample, then every neighbour within 3 sigma (in low-res pixels)."""
    g = guide.double().numpy()
    _, height, width = g.shape
    up = plain_bilinear(low.double().numpy(), height, width)
    sy, sx = height / low.shape[0], width / low.shape[1]  # full-res pixels per low-res pixel
    out = np.zeros_like(up)
    for y in range(height):
        for x in range(width):
            num = den = 0.0
            for qy in range(height):
                for qx in range(width):
                    d2 = ((qy - y) / sy) ** 2 + ((qx - x) / sx) ** 2  # squared distance, low-res pixels
                    if d2 <= (3 * sigma_s) ** 2:
                        ws = np.exp(-d2 / (2 * sigma_s ** 2))
                        wr = np.exp(-np.sum((g[:, qy, qx] - g[:, y, x]) ** 2) / (2 * sigma_r ** 2))
                        num += ws * wr * up[qy, qx]
                        den += ws * wr
            out[y, x] = num / den
    return out


@pytest.mark.parametrize("shape, sigma_s", [((4, 4), 1.0), ((3, 5), 0.75)])
def test_dense_jbu_equals_per_pixel_definition(shape, sigma_s):
    torch.manual_seed(0)
    low = torch.rand(*shape)
    guide = torch.rand(3, 10, 13)
    fast = joint_bilateral_upsample(low, guide, sigma_s, 0.3).double().numpy()
    np.testing.assert_allclose(fast, plain_jbu(low, guide, sigma_s, 0.3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, sigma_s", [((4, 4), 1.0), ((3, 5), 0.75)])
def test_table_equals_per_pixel_definition(shape, sigma_s):
    torch.manual_seed(1)
    low = torch.rand(*shape)
    guide = torch.rand(3, 10, 13)
    table = jbu_table(guide, shape, sigma_s, 0.3)
    out = apply_jbu_table(table, low).double().numpy()
    np.testing.assert_allclose(out, plain_jbu(low, guide, sigma_s, 0.3), rtol=1e-5, atol=1e-6)


def test_table_equals_dense_on_a_photo():
    torch.manual_seed(2)
    low = torch.nn.functional.avg_pool2d(torch.rand(3, 16, 16), 3, 1, 1) * 100
    photo = resize_rgb(data.astronaut(), (160, 120))
    guide = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    dense = joint_bilateral_upsample(low, guide, 1.0, 0.1)
    table = jbu_table(guide, (16, 16), 1.0, 0.1)
    torch.testing.assert_close(apply_jbu_table(table, low), dense, rtol=3e-5, atol=1e-4)
    torch.testing.assert_close(apply_jbu_table(table, low[1]), dense[1], rtol=3e-5, atol=1e-4)


def test_jbu_follows_guide_edges():
    # A ramp in the low-res map; the guide has a sharp edge: the output steps at the edge.
    low = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(4, 1)
    guide = torch.zeros(3, 40, 40)
    guide[:, :, 20:] = 1.0
    out = joint_bilateral_upsample(low, guide, 1.0, 0.1)
    bilinear = torch.nn.functional.interpolate(low[None, None], size=(40, 40), mode="bilinear",
                                               align_corners=False)[0, 0]
    assert (out[:, 19] - out[:, 20]).abs().min() > (bilinear[:, 19] - bilinear[:, 20]).abs().max() * 5


def test_compiled_table_equals_the_torch_gather_of_the_device_path():
    from m2n2.upsample import _apply_table_torch
    photo = resize_rgb(data.astronaut(), (56, 40))
    guide = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    low = torch.rand((3, 8, 9), generator=torch.Generator().manual_seed(3))
    table = jbu_table(guide, (8, 9), 1.0, 0.1)
    torch.testing.assert_close(apply_jbu_table(table, low), _apply_table_torch(table, low, False),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("height, width", [(37, 53), (96, 128)])
def test_compiled_window_weights_are_torchs_bit_for_bit(height, width, flush):
    """Also with subnormals flushed, where lanes that underflow skip torch's exp."""
    import torch.nn.functional as F

    from m2n2.numerics import denormals_flushed
    from m2n2.upsample import _OUTSIDE, _window_weights, window_offsets
    rng = np.random.default_rng(height)
    guide = torch.from_numpy(rng.random((3, height, width), dtype=np.float32))
    if height == 96:  # and a photo, whose smooth regions give many close colours
        guide = torch.from_numpy(np.array(resize_rgb(data.astronaut(), (width, height)))).permute(2, 0, 1)
        guide = guide.float().div_(255.0).contiguous()
    offsets = window_offsets(height, width, 8, 8, 1.0)
    pad_y, pad_x = max(abs(o[0]) for o in offsets), max(abs(o[1]) for o in offsets)
    padded = F.pad(guide, (pad_x, pad_x, pad_y, pad_y), value=_OUTSIDE)
    checked = underflowing = 0
    with denormals_flushed(flush):
        for dy, dx, weight in _window_weights(guide, offsets, 0.1):
            if (dy, dx) < (0, 0):
                continue
            ys, xs = pad_y + dy, pad_x + dx
            log_spatial = next(ls for oy, ox, ls in offsets if (oy, ox) == (dy, dx))
            diff = padded[:, ys:ys + height, xs:xs + width] - guide
            exponent = diff.square_().sum(dim=0).mul_(-1.0 / (2.0 * 0.1 ** 2)).add_(log_spatial)
            expected = torch.exp(exponent)
            assert torch.equal(weight, expected), (dy, dx)
            underflowing += int((exponent < -87.5).sum())
            checked += 1
    assert checked > 100
    assert underflowing > 1000  # the underflow lanes are exercised (and, flushed, skipped)


@pytest.mark.parametrize("flush", [False, True])
def test_fused_dense_sums_are_torchs_bit_for_bit(monkeypatch, flush):
    """The CPU's one-pass sums against torch's += and addcmul_ loop, on a photo, two maps at once."""
    import m2n2.upsample as upsample
    from m2n2.numerics import denormals_flushed

    assert upsample._addcmul_is_fma()  # else the fused pass is never taken here
    guide = torch.from_numpy(np.array(resize_rgb(data.astronaut(), (72, 56)))).permute(2, 0, 1)
    guide = guide.float().div_(255.0).contiguous()
    low = torch.from_numpy(np.random.default_rng(3).random((2, 7, 9), dtype=np.float32) * 500)
    with denormals_flushed(flush):
        fused, fused_sums = joint_bilateral_upsample(low, guide, 1.0, 0.1, return_denominator=True)
        monkeypatch.setattr(upsample, "_addcmul_is_fma", lambda: False)
        loop, loop_sums = joint_bilateral_upsample(low, guide, 1.0, 0.1, return_denominator=True)
        loop_reused = joint_bilateral_upsample(low, guide, 1.0, 0.1, denominator=fused_sums)
    assert torch.equal(fused, loop) and torch.equal(fused_sums, loop_sums) and torch.equal(loop_reused, loop)
    assert not torch.equal(fused[0], fused[1])


def test_a_given_denominator_is_reused_and_gives_the_same_maps():
    guide = torch.from_numpy(np.array(resize_rgb(data.astronaut(), (40, 32)))).permute(2, 0, 1)
    guide = guide.float().div_(255.0).contiguous()
    first, second = (torch.from_numpy(np.random.default_rng(s).random((2, 5, 6), dtype=np.float32) * 100)
                     for s in (1, 2))
    _, sums = joint_bilateral_upsample(first, guide, 1.0, 0.1, return_denominator=True)
    fresh = joint_bilateral_upsample(second, guide, 1.0, 0.1)
    reused = joint_bilateral_upsample(second, guide, 1.0, 0.1, denominator=sums)
    assert torch.equal(reused, fresh)
    assert not torch.equal(joint_bilateral_upsample(second, guide, 1.0, 0.1, denominator=2 * sums), fresh)


@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("height, width", [(67, 45), (131, 96)])  # odd: bands of unequal rows
def test_the_dense_filter_split_between_two_threads_is_the_same_bits(monkeypatch, height, width, flush):
    """Two threads allowed: the helper sums the lower rows (with and without the weights' sums),
    the same bits as one thread; the torch loop the fused pass follows agrees too."""
    import threading

    import m2n2.threads as threads
    import m2n2.upsample as upsample
    from m2n2.numerics import denormals_flushed
    guide = torch.from_numpy(np.array(resize_rgb(data.astronaut(), (width, height)))).permute(2, 0, 1)
    guide = guide.float().div_(255.0).contiguous()
    low = torch.from_numpy(np.random.default_rng(height).random((2, 9, 7), dtype=np.float32) * 300)
    lent = []
    beside = threads.beside  # split_rows, which the upsampling uses, takes it from there
    monkeypatch.setattr(threads, "beside", lambda fn, *args: lent.append(args) or beside(
        lambda *a: (lent.append(threading.current_thread().name), fn(*a))[1], *args))
    # the helper's half is never taken back here (so that the helper computes it; taken back, the
    # caller computes it as on one thread)
    monkeypatch.setattr(threads, "joined", lambda pending, fn, *a: pending.result() if pending else fn(*a))
    with denormals_flushed(flush):
        with threads.using_threads(1):
            one, one_sums = joint_bilateral_upsample(low, guide, 1.0, 0.1, return_denominator=True)
        assert len(lent) == 1 and len(lent[0]) == 2 and lent[0][1] == height  # offered, but not taken
        with threads.using_threads(2):
            two, two_sums = joint_bilateral_upsample(low, guide, 1.0, 0.1, return_denominator=True)
            reused = joint_bilateral_upsample(low, guide, 1.0, 0.1, denominator=one_sums)
        assert [name for name in lent if isinstance(name, str) and name.startswith("m2n2-helper")]
        monkeypatch.setattr(upsample, "_addcmul_is_fma", lambda: False)
        loop = joint_bilateral_upsample(low, guide, 1.0, 0.1)
    assert torch.equal(two, one) and torch.equal(two_sums, one_sums) and torch.equal(reused, one)
    assert torch.equal(loop, one) and not torch.equal(one[0], one[1])


@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("band", [None, 7])  # the default bands (one here), or bands of 7 rows, fewer than pad_y
@pytest.mark.parametrize("size, low_shape, sigma_s", [((72, 56), (7, 9), 1.0), ((61, 83), (8, 5), 0.75)])
def test_the_compiled_table_is_the_torch_loops_bits(monkeypatch, flush, band, size, low_shape, sigma_s):
    """The CPU's one-pass table sums, summed in bands of rows, against the torch loop they follow
    (the device path, the whole image at once), on a photo."""
    import m2n2.upsample as upsample
    from m2n2.numerics import denormals_flushed

    assert upsample._addcmul_is_fma()  # else the compiled sums are never taken here
    guide = torch.from_numpy(np.array(resize_rgb(data.astronaut(), size))).permute(2, 0, 1)
    guide = guide.float().div_(255.0).contiguous()
    taken, bands = [], []
    compiled, weight_pairs = upsample._table_sums_compiled, upsample._weight_pairs
    monkeypatch.setattr(upsample, "_table_sums_compiled", lambda *a: taken.append(1) or compiled(*a))
    monkeypatch.setattr(upsample, "_weight_pairs", lambda *a: bands.append(a[3:]) or weight_pairs(*a))
    if band is not None:
        monkeypatch.setattr(upsample, "_TABLE_BAND_PER_PAD", 0)
        monkeypatch.setattr(upsample, "_TABLE_BAND_MIN", band)
    with denormals_flushed(flush):
        fast = jbu_table(guide, low_shape, sigma_s, 0.1)
        monkeypatch.setattr(upsample, "_addcmul_is_fma", lambda: False)
        loop = jbu_table(guide, low_shape, sigma_s, 0.1)
    assert taken == [1]
    height = size[1]
    assert len(bands) == (1 if band is None else -(-height // band)) + 1  # the torch loop's call last
    assert torch.equal(fast.coefficients, loop.coefficients)
    assert torch.equal(fast.rows, loop.rows) and torch.equal(fast.cols, loop.cols)
    assert int((fast.coefficients != 0).sum()) > fast.coefficients[0, 0].numel()


@pytest.mark.parametrize("height, width", [(67, 45), (131, 96)])
def test_the_table_applied_on_two_threads_is_the_same_bits(monkeypatch, height, width):
    """Two threads allowed: the helper applies the table to the lower rows, the same bits as one thread."""
    import threading

    import m2n2.threads as threads
    guide = torch.from_numpy(np.array(resize_rgb(data.chelsea(), (width, height)))).permute(2, 0, 1)
    guide = guide.float().div_(255.0).contiguous()
    table = jbu_table(guide, (9, 7), 1.0, 0.1)
    low = torch.from_numpy(np.random.default_rng(height).random((2, 9, 7), dtype=np.float32) * 300)
    lent = []
    beside = threads.beside  # split_rows, which the upsampling uses, takes it from there
    monkeypatch.setattr(threads, "beside", lambda fn, *args: lent.append(args[-2:]) or beside(
        lambda *a: (lent.append(threading.current_thread().name), fn(*a))[1], *args))
    monkeypatch.setattr(threads, "joined", lambda pending, fn, *a: pending.result() if pending else fn(*a))
    with threads.using_threads(1):
        one = apply_jbu_table(table, low)
    assert lent == [(height // 2, height)]  # offered, but not taken
    with threads.using_threads(2):
        two = apply_jbu_table(table, low)
        single = apply_jbu_table(table, low[1])
    assert [name for name in lent if isinstance(name, str) and name.startswith("m2n2-helper")]
    assert torch.equal(two, one) and torch.equal(single, one[1]) and not torch.equal(one[0], one[1])
    assert bool((one[:, height // 2:] != 0).any())
