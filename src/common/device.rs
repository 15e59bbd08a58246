//! `--device cpu|cuda:N`.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// Parse `cpu`, `cuda` (= `cuda:0`) or `cuda:N` into a candle device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => match rest.strip_prefix(':').map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => bail!("--device {spec:?}: expected cpu, cuda or cuda:N"),
        },
        None => bail!("--device {spec:?}: expected cpu, cuda or cuda:N"),
    };
    if !candle_core::utils::cuda_is_available() {
        bail!(
            "--device {spec}: this build of blip2 has no CUDA support (build with --features cuda)"
        );
    }
    Device::new_cuda(ordinal).with_context(|| format!("--device {spec}: cannot open the GPU"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }
}
