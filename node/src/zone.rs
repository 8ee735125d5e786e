//! `spdu zone`: fetches the pool zone, as DNS serves it right now, from a running node's
//! control endpoint (`/v1/zone`) and prints it: an RFC 1035 master file for a hidden primary,
//! secondaries or a provider's import.
//!
//! The node renders the file (it knows the SOA fields and every address it serves); this side
//! only checks that it looks like one (it is printed as received, so that `spdu zone > FILE`
//! is exactly what the node serves) and refuses anything with terminal control characters.

use std::net::SocketAddr;

use anyhow::Context;

use crate::peers::fetch;
use crate::text::escape;

/// `GET /v1/zone` from the control endpoint at `control`: the master file.
pub async fn fetch_zone(control: SocketAddr) -> anyhow::Result<String> {
    let url = format!("http://{control}/v1/zone");
    let (status, body) = fetch(control, reqwest::Url::parse(&url).context("the control address")?).await?;
    if !status.is_success() {
        let detail: String = escape(body.trim()).chars().take(200).collect();
        anyhow::bail!("{url} answered HTTP {}: {detail}", status.as_u16());
    }
    if !body.contains(" IN SOA ") || body.chars().any(|c| c.is_control() && c != '\n') {
        anyhow::bail!("{url} did not send a master file");
    }
    Ok(body)
}

/// `spdu zone`: prints the zone of the node whose control endpoint is `control`.
pub async fn print_zone(control: SocketAddr) -> anyhow::Result<()> {
    print!("{}", fetch_zone(control).await?);
    Ok(())
}
