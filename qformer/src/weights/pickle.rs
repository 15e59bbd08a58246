//! A minimal pickle encoder (protocol 2): just the opcodes a PyTorch state dict needs.
//!
//! Values are built on the unpickler's stack in the order Python's own pickler would emit
//! them (`mark`, items, `tuple` / `set_items`, ...). No memo is written: every object is
//! emitted where it is used, which the unpickler accepts as it is (memo entries are only a
//! size optimisation; shared storages are shared through their persistent id, not the memo).

/// Opcodes, as named in CPython's `Lib/pickle.py`.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEMS: u8 = b'u';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8a;
    pub const NEWFALSE: u8 = 0x89;
    pub const NEWTRUE: u8 = 0x88;
    pub const GLOBAL: u8 = b'c';
    pub const REDUCE: u8 = b'R';
    pub const BINPERSID: u8 = b'Q';
}

/// Appends pickle opcodes to a buffer; [`PickleWriter::finish`] closes the stream.
#[derive(Debug)]
pub struct PickleWriter {
    buf: Vec<u8>,
}

impl Default for PickleWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PickleWriter {
    /// A stream that starts with `PROTO 2` (what `torch.save` writes).
    pub fn new() -> Self {
        Self { buf: vec![op::PROTO, 2] }
    }

    /// Starts the items of a tuple or of a `set_items`.
    pub fn mark(&mut self) {
        self.buf.push(op::MARK);
    }

    pub fn empty_dict(&mut self) {
        self.buf.push(op::EMPTY_DICT);
    }

    /// Adds the key/value pairs since the last `mark` to the dict below it.
    pub fn set_items(&mut self) {
        self.buf.push(op::SETITEMS);
    }

    pub fn empty_tuple(&mut self) {
        self.buf.push(op::EMPTY_TUPLE);
    }

    /// The values since the last `mark` as one tuple.
    pub fn tuple(&mut self) {
        self.buf.push(op::TUPLE);
    }

    /// A tuple of ints (a tensor's size or stride); `()` for a scalar.
    pub fn int_tuple(&mut self, values: &[i64]) {
        if values.is_empty() {
            self.empty_tuple();
            return;
        }
        self.mark();
        for &v in values {
            self.int(v);
        }
        self.tuple();
    }

    pub fn unicode(&mut self, s: &str) {
        self.buf.push(op::BINUNICODE);
        // A `&str` longer than 4 GiB cannot be a tensor name or a dict key here.
        self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// The shortest encoding CPython's pickler picks for the value.
    pub fn int(&mut self, v: i64) {
        if (0..=0xff).contains(&v) {
            self.buf.extend_from_slice(&[op::BININT1, v as u8]);
        } else if (0..=0xffff).contains(&v) {
            self.buf.push(op::BININT2);
            self.buf.extend_from_slice(&(v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.buf.push(op::BININT);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // Little-endian two's complement, without the sign-extension bytes.
            let bytes = v.to_le_bytes();
            let mut n = bytes.len();
            while n > 1 {
                let (last, prev) = (bytes[n - 1], bytes[n - 2]);
                let redundant =
                    (last == 0x00 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0);
                if !redundant {
                    break;
                }
                n -= 1;
            }
            self.buf.extend_from_slice(&[op::LONG1, n as u8]);
            self.buf.extend_from_slice(&bytes[..n]);
        }
    }

    pub fn bool(&mut self, v: bool) {
        self.buf.push(if v { op::NEWTRUE } else { op::NEWFALSE });
    }

    /// A class or function by module and name (e.g. `torch._utils` `_rebuild_tensor_v2`).
    pub fn global(&mut self, module: &str, name: &str) {
        self.buf.push(op::GLOBAL);
        self.buf.extend_from_slice(module.as_bytes());
        self.buf.push(b'\n');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(b'\n');
    }

    /// Calls the callable below the argument tuple on top of the stack.
    pub fn reduce(&mut self) {
        self.buf.push(op::REDUCE);
    }

    /// Replaces the value on top of the stack by `persistent_load(value)`.
    pub fn persistent_id(&mut self) {
        self.buf.push(op::BINPERSID);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(op::STOP);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::pickle::{Object, Stack};

    fn ints(v: i64) -> Vec<u8> {
        let mut w = PickleWriter::new();
        w.int(v);
        let bytes = w.finish();
        bytes[2..bytes.len() - 1].to_vec()
    }

    /// Bytes of `pickle.dumps(v, protocol=2)` without the PROTO header and STOP.
    #[test]
    fn ints_take_cpythons_encodings() {
        assert_eq!(ints(0), b"K\x00");
        assert_eq!(ints(255), b"K\xff");
        assert_eq!(ints(256), b"M\x00\x01");
        assert_eq!(ints(65535), b"M\xff\xff");
        assert_eq!(ints(65536), b"J\x00\x00\x01\x00");
        assert_eq!(ints(-1), b"J\xff\xff\xff\xff");
        assert_eq!(ints(2147483647), b"J\xff\xff\xff\x7f");
        assert_eq!(ints(2147483648), b"\x8a\x05\x00\x00\x00\x80\x00");
        assert_eq!(ints(1 << 40), b"\x8a\x06\x00\x00\x00\x00\x00\x01");
        assert_eq!(ints(-2147483649), b"\x8a\x05\xff\xff\xff\x7f\xff");
    }

    /// `pickletools.optimize(pickle.dumps({"a": (1, 300, 70000, "b"), "c": ()}, protocol=2))`
    /// (the optimizer drops the unused memo entries).
    #[test]
    fn dict_of_tuples_matches_cpython_bytes() {
        let mut w = PickleWriter::new();
        w.empty_dict();
        w.mark();
        w.unicode("a");
        w.mark();
        w.int(1);
        w.int(300);
        w.int(70000);
        w.unicode("b");
        w.tuple();
        w.unicode("c");
        w.int_tuple(&[]);
        w.set_items();
        let want: &[u8] = b"\x80\x02}(X\x01\x00\x00\x00a(K\x01M,\x01Jp\x11\x01\x00X\x01\x00\x00\x00btX\x01\x00\x00\x00c)u.";
        assert_eq!(w.finish(), want);
    }

    #[test]
    fn an_unpickler_reads_back_globals_persistent_ids_and_reduce() {
        let mut w = PickleWriter::new();
        w.empty_dict();
        w.mark();
        w.unicode("key");
        w.global("torch._utils", "_rebuild_tensor_v2");
        w.mark();
        w.mark();
        w.unicode("storage");
        w.bool(false);
        w.tuple();
        w.persistent_id();
        w.int_tuple(&[3, 70000, 1 << 33]);
        w.tuple();
        w.reduce();
        w.set_items();
        let bytes = w.finish();

        let mut stack = Stack::empty();
        stack.read_loop(&mut std::io::Cursor::new(bytes)).unwrap();
        let obj = stack.finalize().unwrap();
        let Object::Dict(items) = obj else { panic!("not a dict: {obj:?}") };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].0, Object::Unicode("key".into()));
        let Object::Reduce { callable, args } = &items[0].1 else {
            panic!("not a reduce: {:?}", items[0].1)
        };
        assert_eq!(
            **callable,
            Object::Class {
                module_name: "torch._utils".into(),
                class_name: "_rebuild_tensor_v2".into()
            }
        );
        let Object::Tuple(args) = &**args else { panic!("args not a tuple: {args:?}") };
        assert_eq!(
            args[0],
            Object::PersistentLoad(Box::new(Object::Tuple(vec![
                Object::Unicode("storage".into()),
                Object::Bool(false)
            ])))
        );
        assert_eq!(
            args[1],
            Object::Tuple(vec![Object::Int(3), Object::Int(70000), Object::Long(1 << 33)])
        );
    }
}
