//! `--device cpu|cuda:N`.

use anyhow::{bail, Context, Result};
use candle_core::Device;

pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        _ => match spec
            .strip_prefix("cuda:")
            .or((spec == "cuda").then_some("0"))
        {
            Some(n) => {
                let ordinal: usize = n
                    .parse()
                    .with_context(|| format!("--device {spec}: expected cuda:N with N a number"))?;
                Device::new_cuda(ordinal)
                    .with_context(|| format!("--device {spec}: cannot open the CUDA device"))
            }
            None => bail!("--device {spec}: expected cpu or cuda:N"),
        },
    }
}
