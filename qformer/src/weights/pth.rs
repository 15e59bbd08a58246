//! Writing PyTorch checkpoints in `torch.save`'s zip format, which `torch.load` reads (also
//! with `weights_only=True`, its default since PyTorch 2.6).
//!
//! The archive holds `archive/data.pkl` (the pickled dict), one `archive/data/<key>` record per
//! storage with its raw little-endian bytes, and the `byteorder` / `version` records
//! `torch.save` writes. Records are stored uncompressed with their data 64-byte aligned, as
//! `torch.save` aligns them (PyTorch's reader maps records in place and checks the alignment).
//! Tensors that are the same candle tensor (clones of one `Tensor`) share one storage, as tied
//! parameters do in a PyTorch state dict.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor, TensorId};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::pickle::PickleWriter;
use crate::error::{Error, Result};

/// Every record name starts with this folder (`torch.load` accepts any one folder name).
const ARCHIVE: &str = "archive";
/// `torch.save`'s record alignment (`serialization.py`: `_get_storage_alignment`).
const RECORD_ALIGNMENT: u16 = 64;
/// Version of the zip format that PyTorch 1.6-2.x writes in `archive/version`.
const FORMAT_VERSION: &str = "3";

/// The legacy storage class `torch.load` rebuilds a tensor of this dtype from.
fn storage_class(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "FloatStorage",
        DType::F64 => "DoubleStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::U8 => "ByteStorage",
        _ => return None,
    })
}

/// Row-major strides of a contiguous tensor (what the stored bytes are laid out as).
fn contiguous_strides(dims: &[usize]) -> Vec<i64> {
    let mut strides = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1] as i64;
    }
    strides
}

/// `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, the storage
/// given by persistent id `('storage', torch.<Class>, key, 'cpu', numel)`.
fn pickle_tensor(w: &mut PickleWriter, class: &str, key: &str, tensor: &Tensor) {
    let dims: Vec<i64> = tensor.dims().iter().map(|&d| d as i64).collect();
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.mark();
    w.mark();
    w.unicode("storage");
    w.global("torch", class);
    w.unicode(key);
    w.unicode("cpu");
    w.int(tensor.elem_count() as i64);
    w.tuple();
    w.persistent_id();
    w.int(0);
    w.int_tuple(&dims);
    w.int_tuple(&contiguous_strides(tensor.dims()));
    w.bool(false);
    w.global("collections", "OrderedDict");
    w.empty_tuple();
    w.reduce();
    w.tuple();
    w.reduce();
}

/// Writes `tensors` (name -> tensor, in this order) as a PyTorch checkpoint at `path`: the
/// state dict itself, or `{wrap_key: state_dict}` (LAVIS: `{"model": state_dict}`).
pub fn write_pth(path: &Path, tensors: &[(String, Tensor)], wrap_key: Option<&str>) -> Result<()> {
    let fail = |what: String| Error::Msg(format!("{}: {what}", path.display()));
    let mut seen = HashSet::new();
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(fail(format!("tensor {name} is given twice")));
        }
        if storage_class(t.dtype()).is_none() {
            return Err(fail(format!(
                "tensor {name}: dtype {:?} has no PyTorch storage",
                t.dtype()
            )));
        }
    }

    // One storage per distinct tensor, keyed "0", "1", ... in order of first use.
    let mut storage_of: HashMap<TensorId, String> = HashMap::new();
    let mut storages: Vec<(String, &Tensor)> = Vec::new();
    let mut pickle = PickleWriter::new();
    if let Some(key) = wrap_key {
        pickle.empty_dict();
        pickle.mark();
        pickle.unicode(key);
    }
    pickle.empty_dict();
    if !tensors.is_empty() {
        pickle.mark();
        for (name, t) in tensors {
            let key = storage_of
                .entry(t.id())
                .or_insert_with(|| {
                    let key = storages.len().to_string();
                    storages.push((key.clone(), t));
                    key
                })
                .clone();
            let class = storage_class(t.dtype()).expect("dtype checked above");
            pickle.unicode(name);
            pickle_tensor(&mut pickle, class, &key, t);
        }
        pickle.set_items();
    }
    if wrap_key.is_some() {
        pickle.set_items();
    }
    let pickle = pickle.finish();

    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut zip = ZipWriter::new(file);
    let zip_err = |e: zip::result::ZipError| fail(format!("cannot write zip archive: {e}"));
    let io_err = |e: std::io::Error| Error::io(path, e);
    let record = |zip: &mut ZipWriter<File>, name: &str, data: &[u8]| -> Result<()> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .with_alignment(RECORD_ALIGNMENT)
            .large_file(data.len() as u64 >= u32::MAX as u64);
        zip.start_file(format!("{ARCHIVE}/{name}"), options).map_err(zip_err)?;
        zip.write_all(data).map_err(io_err)
    };
    record(&mut zip, "data.pkl", &pickle)?;
    record(&mut zip, ".format_version", b"1")?;
    record(&mut zip, ".storage_alignment", RECORD_ALIGNMENT.to_string().as_bytes())?;
    record(&mut zip, "byteorder", b"little")?;
    for (key, t) in &storages {
        let mut bytes = Vec::with_capacity(t.elem_count() * t.dtype().size_in_bytes());
        t.write_bytes(&mut bytes)?;
        record(&mut zip, &format!("data/{key}"), &bytes)?;
    }
    record(&mut zip, "version", FORMAT_VERSION.as_bytes())?;
    let file = zip.finish().map_err(zip_err)?;
    file.sync_all().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn sample() -> Vec<(String, Tensor)> {
        let dev = Device::Cpu;
        let w = Tensor::arange(0f32, 12., &dev).unwrap().reshape((3, 4)).unwrap();
        vec![
            ("a.weight".into(), w.clone()),
            ("a.bias".into(), Tensor::new(&[1.5f32, -2.25, 3.0], &dev).unwrap()),
            ("temp".into(), Tensor::new(0.07f32, &dev).unwrap()),
            ("ids".into(), Tensor::arange(0i64, 5, &dev).unwrap().reshape((1, 5)).unwrap()),
            ("tied.weight".into(), w),
        ]
    }

    #[test]
    fn candles_reader_reads_back_names_shapes_dtypes_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pth");
        let tensors = sample();
        write_pth(&path, &tensors, Some("model")).unwrap();
        let back: HashMap<String, Tensor> =
            candle_core::pickle::read_all_with_key(&path, Some("model"))
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(back.len(), tensors.len());
        for (name, t) in &tensors {
            let b = &back[name];
            assert_eq!(b.dims(), t.dims(), "{name}");
            assert_eq!(b.dtype(), t.dtype(), "{name}");
            let (mut x, mut y) = (Vec::new(), Vec::new());
            t.write_bytes(&mut x).unwrap();
            b.write_bytes(&mut y).unwrap();
            assert_eq!(x, y, "{name}");
        }
        // Unwrapped, the state dict is the top-level object.
        let flat = dir.path().join("flat.pth");
        write_pth(&flat, &tensors, None).unwrap();
        assert_eq!(candle_core::pickle::read_all(&flat).unwrap().len(), tensors.len());
    }

    #[test]
    fn records_are_stored_aligned_and_tied_tensors_share_a_storage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pth");
        write_pth(&path, &sample(), Some("model")).unwrap();
        let mut zip = zip::ZipArchive::new(File::open(&path).unwrap()).unwrap();
        let mut names = Vec::new();
        for i in 0..zip.len() {
            let f = zip.by_index(i).unwrap();
            let name = f.name().unwrap().to_string();
            assert_eq!(f.compression(), CompressionMethod::Stored, "{name}");
            let start = f.data_start().unwrap();
            assert_eq!(start % RECORD_ALIGNMENT as u64, 0, "{name} starts at {start}");
            names.push(name);
        }
        // 5 tensors, 4 storages: the tied weight is stored once.
        let want = [
            "data.pkl",
            ".format_version",
            ".storage_alignment",
            "byteorder",
            "data/0",
            "data/1",
            "data/2",
            "data/3",
            "version",
        ]
        .map(|n| format!("archive/{n}"));
        assert_eq!(names, want);
        let mut version = String::new();
        std::io::Read::read_to_string(&mut zip.by_name("archive/version").unwrap(), &mut version)
            .unwrap();
        assert_eq!(version, "3");
    }

    #[test]
    fn duplicate_names_and_storage_less_dtypes_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pth");
        let t = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        let twice = vec![("x".to_string(), t.clone()), ("x".to_string(), t)];
        let err = write_pth(&path, &twice, None).unwrap_err().to_string();
        assert!(err.contains("tensor x is given twice"), "{err}");
        let u32s = vec![("n".to_string(), Tensor::new(&[1u32], &Device::Cpu).unwrap())];
        let err = write_pth(&path, &u32s, None).unwrap_err().to_string();
        assert!(err.contains("tensor n") && err.contains("U32"), "{err}");
        assert!(!path.exists(), "nothing is written for refused input");
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(contiguous_strides(&[]), Vec::<i64>::new());
        assert_eq!(contiguous_strides(&[7]), vec![1]);
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
    }
}
