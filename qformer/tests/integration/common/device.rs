//! The device the parity suites run on, so the same tests check a CUDA build on a GPU machine.

use candle_core::Device;

/// `BLIP2_TEST_DEVICE`: `cpu` (the default, and what CI uses), `cuda` or `cuda:N`. A CUDA
/// device that cannot be opened (no GPU, or a build without `--features cuda`) fails the test
/// instead of quietly falling back to the CPU. Opened once per test binary, so every fixture,
/// model and input shares the one device.
pub fn test_device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE.get_or_init(open_test_device).clone()
}

fn open_test_device() -> Device {
    let spec = std::env::var("BLIP2_TEST_DEVICE").unwrap_or_default();
    match spec.as_str() {
        "" | "cpu" => Device::Cpu,
        s => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(n) => n.strip_prefix(':').and_then(|n| n.parse().ok()).unwrap_or_else(|| {
                    panic!("BLIP2_TEST_DEVICE={s}: expected cpu, cuda or cuda:N")
                }),
                None => panic!("BLIP2_TEST_DEVICE={s}: expected cpu, cuda or cuda:N"),
            };
            Device::new_cuda(ordinal)
                .unwrap_or_else(|e| panic!("BLIP2_TEST_DEVICE={s}: cannot open the GPU: {e}"))
        }
    }
}
