//! Reading a `.safetensors` file tensor by tensor, each in its stored dtype.
//!
//! `candle_core::safetensors::load` reads the whole file into memory and then copies every tensor
//! out of that buffer, so loading a 13.5 GB bf16 LLaMA peaks at twice its size. Here the header is
//! parsed first and each tensor's bytes are read from the file straight into the tensor's own
//! buffer: the peak is the tensors themselves. (A memory map would not lower it: candle's CPU
//! tensors own their storage, so the bytes are copied out of the map anyway, and the mapped pages
//! count in the resident set until the map goes.)

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use candle_core::{Device, Tensor, WithDType};
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Every tensor of the file, on `device`, in its stored dtype.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bad = |m: String| Error::Msg(format!("{}: cannot read safetensors: {m}", path.display()));
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0).map_err(|e| bad(format!("no header ({e})")))?;
    let header_len = u64::from_le_bytes(n);
    if header_len > 100_000_000 || 8 + header_len > file_len {
        return Err(bad(format!("header length {header_len} does not fit the file")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(|e| bad(e.to_string()))?;
    let entries: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let data_start = 8 + header_len;
    let mut out = HashMap::with_capacity(entries.len());
    for (name, v) in entries {
        if name == "__metadata__" {
            continue;
        }
        let e: Entry =
            serde_json::from_value(v).map_err(|e| bad(format!("header entry {name}: {e}")))?;
        let t = read_tensor(&file, data_start, file_len, &e)
            .map_err(|m| bad(format!("tensor {name}: {m}")))?;
        out.insert(name, t.to_device(device)?);
    }
    Ok(out)
}

fn read_tensor(
    file: &File,
    data_start: u64,
    file_len: u64,
    e: &Entry,
) -> std::result::Result<Tensor, String> {
    let (b0, b1) = e.data_offsets;
    if b1 < b0 || data_start + b1 > file_len {
        return Err(format!("data offsets {b0}..{b1} lie outside the file"));
    }
    let bytes = (b1 - b0) as usize;
    let numel: usize = e.shape.iter().product();
    let at = data_start + b0;
    let shape = e.shape.as_slice();
    let t = match e.dtype.as_str() {
        "F32" => typed::<f32>(file, at, bytes, numel, shape),
        "BF16" => typed::<half::bf16>(file, at, bytes, numel, shape),
        "F16" => typed::<half::f16>(file, at, bytes, numel, shape),
        "F64" => typed::<f64>(file, at, bytes, numel, shape),
        "I64" => typed::<i64>(file, at, bytes, numel, shape),
        "U32" => typed::<u32>(file, at, bytes, numel, shape),
        "U8" => typed::<u8>(file, at, bytes, numel, shape),
        // The rarer dtypes (I32, I16, BOOL, F8...) through candle's own conversion.
        other => {
            let dtype: safetensors::Dtype =
                serde_json::from_value(serde_json::Value::String(other.into()))
                    .map_err(|_| format!("unknown dtype {other}"))?;
            let mut buf = vec![0u8; bytes];
            file.read_exact_at(&mut buf, at).map_err(|e| e.to_string())?;
            let view = safetensors::tensor::TensorView::new(dtype, e.shape.clone(), &buf)
                .map_err(|e| e.to_string())?;
            use candle_core::safetensors::Load;
            return view.load(&Device::Cpu).map_err(|e| e.to_string());
        }
    }?;
    Ok(t)
}

/// `numel` elements of `T` read from `at` into a new tensor (little-endian, as the format is).
fn typed<T: WithDType + Default>(
    file: &File,
    at: u64,
    bytes: usize,
    numel: usize,
    shape: &[usize],
) -> std::result::Result<Tensor, String> {
    let size = std::mem::size_of::<T>();
    if bytes != numel * size {
        return Err(format!(
            "{bytes} bytes for shape {shape:?} of {:?} ({} expected)",
            T::DTYPE,
            numel * size
        ));
    }
    if cfg!(target_endian = "big") {
        return Err("big-endian hosts are not supported".into());
    }
    let mut v = vec![T::default(); numel];
    // SAFETY: `v` owns `numel * size` initialised bytes; every bit pattern is a valid value of
    // these plain numeric types, and the slice is dropped before `v` is used again.
    let raw = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, bytes) };
    file.read_exact_at(raw, at).map_err(|e| e.to_string())?;
    Tensor::from_vec(v, shape, &Device::Cpu).map_err(|e| e.to_string())
}
