//! Image decoding, preprocessing and class ranking for image scoring functions.
//!
//! Kept free of WASI and HTTP so that the arithmetic that decides a prediction can be unit
//! tested natively, and so that the native benchmark baseline runs exactly this code.

use image::{imageops::FilterType, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use serde::Deserialize;
use std::io::Cursor;

/// Why an image could not be turned into a tensor. Every variant is the client's fault and
/// maps to a 4xx in the function.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// The request carried no bytes at all.
    #[error("the request body is empty; send the image bytes")]
    Empty,
    /// The bytes are not in a format we decode.
    #[error("the body is not a JPEG, PNG, WebP or GIF image")]
    NotAnImage,
    /// The header claims more pixels than allowed; refused before decoding.
    #[error("the image is {width}x{height} pixels, over the limit of {max} pixels")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    /// Its pixels would take more memory than allowed (deep colour, alpha); refused before
    /// decoding.
    #[error(
        "the image's {width}x{height} pixels at {bytes_per_pixel} bytes each decode to {bytes} bytes, \
         over the limit of {max} bytes (4 bytes a pixel of the pixel limit)"
    )]
    TooManyBytes {
        width: u32,
        height: u32,
        bytes_per_pixel: u16,
        bytes: u64,
        max: u64,
    },
    /// The decoder refused the header's dimensions as too large to hold in memory.
    #[error("the image is too large to decode: {0}")]
    TooLarge(String),
    /// The image is truncated or corrupt.
    #[error("the image could not be decoded: {0}")]
    Invalid(String),
}

/// How pixel values in [0, 255] become model inputs. Read from `[preprocess]` in `model.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Resize so that the short side has this many pixels (bilinear), keeping the aspect ratio.
    pub resize: u32,
    /// Then take a centred square crop of this size.
    pub crop: u32,
    /// Scale pixels linearly to this `[low, high]` range. Exclusive with `mean`/`std`.
    #[serde(default)]
    pub range: Option<[f32; 2]>,
    /// Per-channel mean (RGB) subtracted from pixels scaled to [0, 1].
    #[serde(default)]
    pub mean: Option<[f32; 3]>,
    /// Per-channel standard deviation (RGB) that pixels are divided by after the mean.
    #[serde(default)]
    pub std: Option<[f32; 3]>,
    /// Memory layout of the tensor; only `nchw` is supported so far.
    #[serde(default = "default_layout")]
    pub layout: String,
}

fn default_layout() -> String {
    "nchw".to_string()
}

impl Preprocess {
    /// Per-channel `(scale, offset)` so that `value = pixel * scale + offset`.
    ///
    /// Folding both normalisation styles into one affine map keeps the inner loop trivial.
    pub fn affine(&self) -> Result<[(f32, f32); 3], String> {
        if self.layout != "nchw" {
            return Err(format!(
                "preprocess.layout `{}` is not supported; use `nchw`",
                self.layout
            ));
        }
        match (self.range, self.mean, self.std) {
            (Some([lo, hi]), None, None) => Ok([((hi - lo) / 255.0, lo); 3]),
            (None, Some(mean), Some(std)) => {
                let mut out = [(0.0, 0.0); 3];
                for c in 0..3 {
                    if std[c] == 0.0 {
                        return Err("preprocess.std must not contain 0".into());
                    }
                    out[c] = (1.0 / (255.0 * std[c]), -mean[c] / std[c]);
                }
                Ok(out)
            }
            _ => Err("preprocess needs either `range` or both `mean` and `std`".into()),
        }
    }
}

/// Decode an image, refusing it before decoding if its header claims more than `max_pixels`,
/// or pixels that take more than `4 * max_pixels` bytes decoded (16-bit channels and alpha
/// cost up to 8 bytes a pixel, so the pixel count alone does not bound the memory).
///
/// The format is sniffed from the bytes, so a mislabelled but valid image still works.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, VisionError> {
    if bytes.is_empty() {
        return Err(VisionError::Empty);
    }
    let format = image::guess_format(bytes).map_err(|_| VisionError::NotAnImage)?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif
    ) {
        return Err(VisionError::NotAnImage);
    }
    let max_bytes = max_pixels.saturating_mul(4);
    let reader = |b| ImageReader::with_format(Cursor::new(b), format);
    // Reading the header allocates nothing big; our own limits below are the check.
    let mut header = reader(bytes);
    header.no_limits();
    let invalid = |e| match e {
        // On wasm32 some decoders size their buffers while reading the header.
        image::ImageError::Limits(l) => VisionError::TooLarge(l.to_string()),
        e => VisionError::Invalid(e.to_string()),
    };
    let decoder = header.into_decoder().map_err(invalid)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(VisionError::TooManyPixels {
            width,
            height,
            max: max_pixels,
        });
    }
    let decoded = decoder.total_bytes();
    if decoded > max_bytes {
        return Err(VisionError::TooManyBytes {
            width,
            height,
            bytes_per_pixel: decoder.color_type().bytes_per_pixel().into(),
            bytes: decoded,
            max: max_bytes,
        });
    }
    drop(decoder);
    let mut limits = Limits::default();
    // The decoded pixels plus decoder scratch; the checks above are the real bound.
    limits.max_alloc = Some(max_bytes.saturating_mul(2).max(1 << 20));
    let mut r = reader(bytes);
    r.limits(limits);
    let img = r.decode().map_err(|e| VisionError::Invalid(e.to_string()))?;
    Ok(img.into_rgb8())
}

/// Resize the short side, centre-crop and normalise `img` into `out` (CHW, `3*crop*crop` long).
pub fn to_tensor(img: &RgbImage, pre: &Preprocess, affine: &[(f32, f32); 3], out: &mut Vec<f32>) {
    let cropped = resize_and_crop(img, pre.resize, pre.crop);
    let plane = (pre.crop * pre.crop) as usize;
    let base = out.len();
    out.resize(base + 3 * plane, 0.0);
    let (r, rest) = out[base..].split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let [(rs, ro), (gs, go), (bs, bo)] = *affine;
    for (((px, r), g), b) in cropped.chunks_exact(3).zip(r).zip(g).zip(b) {
        *r = f32::from(px[0]) * rs + ro;
        *g = f32::from(px[1]) * gs + go;
        *b = f32::from(px[2]) * bs + bo;
    }
}

/// Resize so the short side is `short` pixels (bilinear), then take a centred `crop` square.
///
/// The result is byte for byte what `image::imageops::resize` with `FilterType::Triangle`
/// followed by `crop_imm` gives (the same taps, the same f32 operations in the same order),
/// but only the pixels inside the crop are computed, on three channels instead of four: about
/// a third of the work for a 256 -> 224 crop.
pub fn resize_and_crop(img: &RgbImage, short: u32, crop: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = short.max(crop) as f64 / f64::from(w.min(h).max(1));
    let nw = ((f64::from(w) * s).round() as u32).max(crop);
    let nh = ((f64::from(h) * s).round() as u32).max(crop);
    let left = (nw - crop) / 2;
    let top = (nh - crop) / 2;
    if (nw, nh) == (w, h) || w == 0 || h == 0 {
        // `resize` copies an image that already has the size (and cannot sample an empty one).
        let resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
        return image::imageops::crop_imm(&resized, left, top, crop, crop).to_image();
    }
    let rows = taps(h, nh, top, crop);
    let cols = taps(w, nw, left, crop);
    // The source columns the horizontal pass reads.
    let x0 = cols.iter().map(|(start, _)| *start).min().unwrap_or(0) as usize;
    let x1 = cols
        .iter()
        .map(|(start, ws)| *start as usize + ws.len())
        .max()
        .unwrap_or(0);
    let span = x1 - x0;
    let row_len = span * 3;
    let src = img.as_raw();
    let stride = w as usize * 3;
    // Vertical pass first, as `resize` does: the crop's rows, those columns, in f32. Each value
    // sums its taps in order from 0.0 as `resize` does, so a whole row accumulates at once.
    // One spare value at the end lets the horizontal pass read every pixel as four lanes.
    let mut tmp = vec![0f32; crop as usize * row_len + 1];
    for (acc, (start, ws)) in tmp.chunks_exact_mut(row_len).zip(&rows) {
        for (i, &wt) in ws.iter().enumerate() {
            let from = (*start as usize + i) * stride + x0 * 3;
            lanes::accumulate(acc, &src[from..from + row_len], wt);
        }
    }
    // Then the horizontal pass, row by row, rounded and clamped to u8 as `resize` does. Each
    // tap reads four lanes, RGB and the next pixel's red (computed and dropped).
    let mut out = RgbImage::new(crop, crop);
    let out_row = crop as usize * 3;
    for (y, orow) in out.chunks_exact_mut(out_row).enumerate() {
        let trow = &tmp[y * row_len..(y + 1) * row_len + 1];
        for (px, (start, ws)) in orow.chunks_exact_mut(3).zip(&cols) {
            let from = (*start as usize - x0) * 3;
            let t = lanes::dot(&trow[from..from + ws.len() * 3 + 1], ws);
            for (o, v) in px.iter_mut().zip(t) {
                *o = round_to_u8(v);
            }
        }
    }
    out
}

/// The resize's two inner loops, in WebAssembly SIMD where the function is built with it.
///
/// LLVM vectorises neither loop on its own for wasm32 (the u8 to f32 widening and the
/// three-channel stride defeat it), and they were a third of the guest's preprocessing. The
/// SIMD versions do the same IEEE multiplies and adds in the same order per value, so results
/// are bit-identical to the scalar ones, which the native tests check against `image`.
mod lanes {
    /// `acc[i] += src[i] as f32 * wt` for every `i` (the slices have the same length).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub fn accumulate(acc: &mut [f32], src: &[u8], wt: f32) {
        use core::arch::wasm32::*;
        let w = f32x4_splat(wt);
        let n = acc.len().min(src.len()) / 16 * 16;
        let (head, tail) = acc.split_at_mut(n);
        for (a, s) in head.chunks_exact_mut(16).zip(src[..n].chunks_exact(16)) {
            // SAFETY: `s` holds 16 bytes and `a` 16 floats; wasm loads and stores may be
            // unaligned.
            unsafe {
                let bytes = v128_load(s.as_ptr().cast());
                let (lo, hi) = (u16x8_extend_low_u8x16(bytes), u16x8_extend_high_u8x16(bytes));
                let quads = [
                    u32x4_extend_low_u16x8(lo),
                    u32x4_extend_high_u16x8(lo),
                    u32x4_extend_low_u16x8(hi),
                    u32x4_extend_high_u16x8(hi),
                ];
                for (a, q) in a.chunks_exact_mut(4).zip(quads) {
                    let p = a.as_mut_ptr().cast::<v128>();
                    v128_store(p, f32x4_add(v128_load(p), f32x4_mul(f32x4_convert_u32x4(q), w)));
                }
            }
        }
        scalar_accumulate(tail, &src[n..], wt);
    }

    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    pub fn accumulate(acc: &mut [f32], src: &[u8], wt: f32) {
        scalar_accumulate(acc, src, wt);
    }

    fn scalar_accumulate(acc: &mut [f32], src: &[u8], wt: f32) {
        for (t, &s) in acc.iter_mut().zip(src) {
            *t += f32::from(s) * wt;
        }
    }

    /// One pixel's weighted sum over its taps: tap `k` reads `row[3k..3k + 4]` (RGB and one
    /// value past it), so `row` holds `3 * ws.len() + 1` values. Lane 3 is junk.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub fn dot(row: &[f32], ws: &[f32]) -> [f32; 4] {
        use core::arch::wasm32::*;
        let mut t = f32x4_splat(0.0);
        for (k, &wt) in ws.iter().enumerate() {
            let p = &row[3 * k..3 * k + 4];
            // SAFETY: `p` holds 4 floats; wasm loads may be unaligned.
            let v = unsafe { v128_load(p.as_ptr().cast()) };
            t = f32x4_add(t, f32x4_mul(v, f32x4_splat(wt)));
        }
        [
            f32x4_extract_lane::<0>(t),
            f32x4_extract_lane::<1>(t),
            f32x4_extract_lane::<2>(t),
            f32x4_extract_lane::<3>(t),
        ]
    }

    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    pub fn dot(row: &[f32], ws: &[f32]) -> [f32; 4] {
        let mut t = [0f32; 4];
        for (k, &wt) in ws.iter().enumerate() {
            for (t, &p) in t.iter_mut().zip(&row[3 * k..3 * k + 4]) {
                *t += p * wt;
            }
        }
        t
    }
}

/// `clamp(v, 0, 255).round() as u8`, exactly, for any `v` but NaN, without branches.
///
/// `v + 0.5` is exact in f64 for every f32, and `as` truncates and saturates, so this rounds
/// half away from zero as `round` does. WebAssembly has no instruction for that rounding, so
/// `round` there is a libm call with a data-dependent branch per channel: it was a fifth of
/// the guest's preprocessing time.
fn round_to_u8(v: f32) -> u8 {
    (f64::from(v) + 0.5) as u8
}

/// The Triangle filter's taps for output pixels `first..first + count` of a `src` -> `new`
/// resize: for each, the first source pixel and the normalised weights, computed exactly as
/// `image`'s `vertical_sample` and `horizontal_sample` do.
fn taps(src: u32, new: u32, first: u32, count: u32) -> Vec<(u32, Vec<f32>)> {
    let ratio = src as f32 / new as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = 1.0 * sratio;
    (first..first + count)
        .map(|o| {
            let input = (o as f32 + 0.5) * ratio;
            let left = clamp((input - support).floor() as i64, 0, i64::from(src) - 1) as u32;
            let right = clamp(
                (input + support).ceil() as i64,
                i64::from(left) + 1,
                i64::from(src),
            ) as u32;
            let input = input - 0.5;
            let mut ws = Vec::with_capacity((right - left) as usize);
            let mut sum = 0.0;
            for i in left..right {
                let x = ((i as f32 - input) / sratio).abs();
                let w = if x < 1.0 { 1.0 - x } else { 0.0 };
                ws.push(w);
                sum += w;
            }
            for w in ws.iter_mut() {
                *w /= sum;
            }
            (left, ws)
        })
        .collect()
}

/// `image`'s clamp: no panic when `lo > hi`, and the same answer for floats.
fn clamp<T: PartialOrd>(a: T, lo: T, hi: T) -> T {
    if a < lo {
        lo
    } else if a > hi {
        hi
    } else {
        a
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Indices of the `k` largest scores, best first; ties keep the lower index first.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let rank = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    // Partition first, then order only the k best: sorting all 1,000 ImageNet classes was
    // the guest's largest cost after the labels in an `application/x-tensor` request.
    if k < idx.len() {
        idx.select_nth_unstable_by(k, rank);
        idx.truncate(k);
    }
    idx.sort_unstable_by(rank);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(range: Option<[f32; 2]>, mean: Option<[f32; 3]>, std: Option<[f32; 3]>) -> Preprocess {
        Preprocess {
            resize: 8,
            crop: 4,
            range,
            mean,
            std,
            layout: "nchw".into(),
        }
    }

    #[test]
    fn range_maps_0_and_255_to_the_ends() {
        let a = pre(Some([-1.0, 1.0]), None, None).affine().unwrap();
        for (s, o) in a {
            assert!((0.0 * s + o - -1.0).abs() < 1e-6);
            assert!((255.0 * s + o - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn mean_std_matches_the_torchvision_formula() {
        let mean = [0.485, 0.456, 0.406];
        let std = [0.229, 0.224, 0.225];
        let a = pre(None, Some(mean), Some(std)).affine().unwrap();
        for c in 0..3 {
            let want = (200.0 / 255.0 - mean[c]) / std[c];
            let got = 200.0 * a[c].0 + a[c].1;
            assert!((want - got).abs() < 1e-5, "channel {c}: {want} vs {got}");
        }
    }

    #[test]
    fn ambiguous_normalisation_is_refused() {
        assert!(pre(None, None, None).affine().is_err());
        assert!(pre(Some([0.0, 1.0]), Some([0.0; 3]), Some([1.0; 3]))
            .affine()
            .is_err());
        assert!(pre(None, Some([0.0; 3]), Some([0.0, 1.0, 1.0])).affine().is_err());
    }

    #[test]
    fn resize_and_crop_centres_on_the_long_side() {
        // 20x10: left half black, middle band red, right white. Short side 10 -> 5, width 10.
        let img = RgbImage::from_fn(20, 10, |x, _| {
            if (8..12).contains(&x) {
                image::Rgb([255, 0, 0])
            } else if x < 10 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let out = resize_and_crop(&img, 5, 2);
        assert_eq!(out.dimensions(), (2, 2));
        // The centre crop lands on the red band.
        for p in out.pixels() {
            assert!(p[0] > 200 && p[1] < 60, "{p:?}");
        }
    }

    #[test]
    fn resize_and_crop_is_byte_for_byte_image_resize_then_crop() {
        let reference = |img: &RgbImage, short: u32, crop: u32| {
            let (w, h) = img.dimensions();
            let s = short.max(crop) as f64 / f64::from(w.min(h).max(1));
            let nw = ((f64::from(w) * s).round() as u32).max(crop);
            let nh = ((f64::from(h) * s).round() as u32).max(crop);
            let r = image::imageops::resize(img, nw, nh, FilterType::Triangle);
            image::imageops::crop_imm(&r, (nw - crop) / 2, (nh - crop) / 2, crop, crop).to_image()
        };
        // Noise, so that every weight matters; down- and upscaling, portrait and landscape,
        // odd sizes, and the size `resize` only copies.
        let mut seed = 12345u32;
        let mut noise = |w: u32, h: u32| {
            RgbImage::from_fn(w, h, |_, _| {
                let mut px = [0u8; 3];
                for c in &mut px {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *c = (seed >> 24) as u8;
                }
                image::Rgb(px)
            })
        };
        for (w, h, short, crop) in [
            (451, 300, 256, 224),
            (640, 427, 256, 224),
            (512, 600, 256, 224),
            (300, 300, 256, 224),
            (224, 224, 256, 224),
            (97, 61, 256, 224),
            (256, 310, 256, 224),
            (20, 10, 5, 2),
            (1001, 333, 260, 260),
        ] {
            let img = noise(w, h);
            assert!(
                resize_and_crop(&img, short, crop) == reference(&img, short, crop),
                "{w}x{h} -> short {short}, crop {crop}"
            );
        }
    }

    #[test]
    fn round_to_u8_is_clamp_then_round() {
        let below_half = f32::from_bits(0.5f32.to_bits() - 1);
        let mut values = vec![
            -1.0, -0.5, -0.0, 0.0, below_half, 0.5, 1.5, 2.5, 254.5, 255.0, 255.5, 300.0,
        ];
        values.extend((0..=2600).map(|i| i as f32 / 10.0));
        values.extend((1..=255).flat_map(|i| {
            let half = i as f32 - 0.5;
            [
                f32::from_bits(half.to_bits() - 1),
                half,
                f32::from_bits(half.to_bits() + 1),
            ]
        }));
        for v in values {
            assert_eq!(round_to_u8(v), clamp(v, 0.0, 255.0).round() as u8, "{v}");
        }
    }

    #[test]
    fn tensor_is_chw_with_the_affine_applied() {
        let img = RgbImage::from_fn(4, 4, |_, _| image::Rgb([255, 0, 51]));
        let p = Preprocess {
            resize: 4,
            crop: 4,
            range: Some([0.0, 1.0]),
            mean: None,
            std: None,
            layout: "nchw".into(),
        };
        let mut out = Vec::new();
        to_tensor(&img, &p, &p.affine().unwrap(), &mut out);
        assert_eq!(out.len(), 48);
        assert!(out[..16].iter().all(|&v| (v - 1.0).abs() < 1e-6));
        assert!(out[16..32].iter().all(|&v| v.abs() < 1e-6));
        assert!(out[32..].iter().all(|&v| (v - 0.2).abs() < 1e-6));
    }

    #[test]
    fn decode_refuses_empty_garbage_truncated_and_huge() {
        assert!(matches!(decode(b"", 1 << 20), Err(VisionError::Empty)));
        assert!(matches!(
            decode(b"hello, world", 1 << 20),
            Err(VisionError::NotAnImage)
        ));
        let mut png = Vec::new();
        RgbImage::new(64, 64)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&png, 1 << 20).unwrap().dimensions(), (64, 64));
        assert!(matches!(
            decode(&png[..png.len() / 2], 1 << 20),
            Err(VisionError::Invalid(_))
        ));
        assert!(matches!(
            decode(&png, 64 * 63),
            Err(VisionError::TooManyPixels { .. })
        ));
    }

    #[test]
    fn decode_refuses_deep_pixels_that_fit_the_pixel_count() {
        // 16-bit RGBA: 8 bytes a pixel, twice what the limit allows for this pixel count.
        let mut png = Vec::new();
        image::ImageBuffer::<image::Rgba<u16>, _>::new(64, 64)
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        assert!(matches!(
            decode(&png, 64 * 64),
            Err(VisionError::TooManyBytes {
                bytes_per_pixel: 8,
                bytes: 32768,
                max: 16384,
                ..
            })
        ));
        assert!(decode(&png, 64 * 64 * 2).is_ok());
    }

    #[test]
    fn softmax_and_top_k() {
        let p = softmax(&[1.0, 3.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(top_k(&p, 3), vec![1, 3, 2]);
        assert_eq!(top_k(&p, 10).len(), 4);
    }

    #[test]
    fn top_k_orders_as_a_full_sort_would() {
        // Few distinct values, so that ties decide many places.
        let scores: Vec<f32> = (0..200u32).map(|i| ((i * 37) % 11) as f32 / 10.0).collect();
        let mut all: Vec<usize> = (0..scores.len()).collect();
        all.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        for k in [0, 1, 5, 11, 199, 200, 250] {
            assert_eq!(top_k(&scores, k), all[..k.min(all.len())], "k = {k}");
        }
    }
}
