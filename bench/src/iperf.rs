//! Reading iperf3's JSON report (`iperf3 -c ... -J`).

use serde_json::Value;

use crate::BenchError;

/// The received throughput, in bits per second, from an iperf3 client's JSON report
/// (`end.sum_received.bits_per_second`). An `error` field in the report becomes the error.
pub fn received_bits_per_second(json: &str) -> Result<f64, BenchError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| BenchError::Iperf(format!("unreadable JSON report: {e}")))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(BenchError::Iperf(err.to_string()));
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .ok_or_else(|| {
            BenchError::Iperf("report has no end.sum_received.bits_per_second".to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_received_rate() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"bits_per_second":4.1e10},
            "sum_received":{"bits_per_second":40123456789.5}}}"#;
        assert_eq!(received_bits_per_second(json).unwrap(), 40123456789.5);
    }

    #[test]
    fn reports_iperf_error() {
        let json = r#"{"start":{},"intervals":[],"end":{},
            "error":"unable to connect to server: Connection refused"}"#;
        let e = received_bits_per_second(json).unwrap_err().to_string();
        assert!(e.contains("Connection refused"), "{e}");
    }

    #[test]
    fn rejects_missing_field_and_garbage() {
        assert!(received_bits_per_second(r#"{"end":{}}"#).is_err());
        assert!(received_bits_per_second("iperf3: error").is_err());
    }
}
