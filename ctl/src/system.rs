//! Commands about the daemon and everything in it: `version`, `info`,
//! `events`, and `inspect` (a container or an image, as JSON).

use anyhow::{anyhow, Result};
use berth_proto::v1 as pb;
use serde_json::{json, Value};

use crate::cli::{EventsArgs, Format, InspectArgs, InspectKind};
use crate::client::{rpc, Daemon};
use crate::output;

pub async fn version(d: Option<&Daemon>, format: Format) -> Result<i32> {
    let server = match d {
        Some(d) => Some(
            d.version()
                .version(pb::VersionRequest {})
                .await
                .map_err(rpc)?
                .into_inner(),
        ),
        None => None,
    };
    let client = env!("CARGO_PKG_VERSION");
    if format == Format::Json {
        output::print_json(&json!({
            "client": {"version": client, "apiRevision": berth_proto::API_REVISION},
            "server": server.as_ref().map(|s| json!({"version": s.version, "apiRevision": s.api_revision})),
        }));
        return Ok(0);
    }
    println!(
        "Client:\n Version:      {client}\n API revision: {}",
        berth_proto::API_REVISION
    );
    if let Some(s) = server {
        println!(
            "Server: berth-imaged\n Version:      {}\n API revision: {}",
            s.version, s.api_revision
        );
    }
    Ok(0)
}

pub async fn info(d: &Daemon, format: Format) -> Result<i32> {
    let server = d
        .version()
        .version(pb::VersionRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    let containers = d
        .containers()
        .list(pb::ListContainersRequest { all: true })
        .await
        .map_err(rpc)?
        .into_inner()
        .containers;
    let count = |status: pb::container::Status| {
        containers
            .iter()
            .filter(|c| c.status == status as i32)
            .count()
    };
    let images = d
        .images()
        .list(pb::ListImagesRequest::default())
        .await
        .map_err(rpc)?
        .into_inner()
        .images;
    let volumes = d
        .volumes()
        .list(pb::ListVolumesRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .volumes;
    use pb::container::Status;
    let doc = json!({
        "serverVersion": server.version,
        "apiRevision": server.api_revision,
        "address": d.address.display().to_string(),
        "containers": containers.len(),
        "running": count(Status::Running),
        "paused": count(Status::Paused),
        "stopped": count(Status::Stopped),
        "created": count(Status::Created),
        "images": images.len(),
        "volumes": volumes.len(),
    });
    if format == Format::Json {
        output::print_json(&doc);
        return Ok(0);
    }
    println!(
        "Server: berth-imaged {} (API revision {})",
        server.version, server.api_revision
    );
    println!("Address: {}", d.address.display());
    println!(
        "Containers: {}\n Running: {}\n Paused: {}\n Stopped: {}\n Created: {}",
        containers.len(),
        doc["running"],
        doc["paused"],
        doc["stopped"],
        doc["created"]
    );
    println!("Images: {}\nVolumes: {}", images.len(), volumes.len());
    Ok(0)
}

pub async fn inspect(d: &Daemon, a: &InspectArgs) -> Result<i32> {
    let mut docs = Vec::new();
    for name in &a.names {
        if a.kind != Some(InspectKind::Image) {
            match d
                .containers()
                .get(pb::GetContainerRequest { id: name.clone() })
                .await
            {
                Ok(c) => {
                    docs.push(output::container(&c.into_inner()));
                    continue;
                }
                Err(e) if e.code() != tonic::Code::NotFound => return Err(rpc(e)),
                Err(_) => {}
            }
        }
        if a.kind != Some(InspectKind::Container) {
            match crate::images::get(d, name).await {
                Ok(i) => {
                    docs.push(output::image(&i));
                    continue;
                }
                Err(e) if e.code() != tonic::Code::NotFound => return Err(rpc(e)),
                Err(_) => {}
            }
        }
        let what = match a.kind {
            Some(InspectKind::Container) => "container",
            Some(InspectKind::Image) => "image",
            None => "container or image",
        };
        return Err(anyhow!(
            "no such {what}: {name} (`berthctl ps -a` and `berthctl images` list what exists)"
        ));
    }
    if let Some(format) = &a.format {
        for doc in &docs {
            println!(
                "{}",
                crate::template::render(format, &crate::template::docker_names(doc))?
            );
        }
        return Ok(0);
    }
    output::print_json(&Value::Array(docs));
    Ok(0)
}

/// The first string field (field 1) of a protobuf message: the container
/// id in every `containerd.events.Task*` event and in `berth.v1.Container`;
/// read from the wire format so berthctl needs no containerd types.
fn first_string(bytes: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < bytes.len() {
        let (key, n) = varint(&bytes[i..])?;
        i += n;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => i += varint(&bytes[i..])?.1,
            1 => i += 8,
            5 => i += 4,
            2 => {
                let (len, n) = varint(&bytes[i..])?;
                i += n;
                let end = i.checked_add(len as usize)?;
                let data = bytes.get(i..end)?;
                if field == 1 {
                    return String::from_utf8(data.to_vec()).ok();
                }
                i = end;
            }
            _ => return None,
        }
    }
    None
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

pub async fn events(d: &Daemon, a: &EventsArgs) -> Result<i32> {
    let mut stream = d
        .events()
        .subscribe(pb::SubscribeRequest {
            topics: a.topics.clone(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    while let Some(e) = stream.message().await.map_err(rpc)? {
        let time = e
            .timestamp
            .as_ref()
            .map(|t| output::rfc3339_text(t.seconds, t.nanos))
            .unwrap_or_default();
        let (kind, subject) = match &e.event {
            Some(any) => (
                any.type_url.clone(),
                first_string(&any.value).unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        if a.format.format == Format::Json {
            println!(
                "{}",
                json!({"time": time, "topic": e.topic, "type": kind, "id": subject})
            );
        } else {
            println!("{time} {} {kind} {subject}", e.topic);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_string_field_is_found_past_other_fields() {
        // field 3 varint 7, field 1 "abc"
        assert_eq!(
            first_string(&[0x18, 7, 0x0a, 3, b'a', b'b', b'c']).as_deref(),
            Some("abc")
        );
        assert_eq!(first_string(&[0x0a, 9, b'a']), None);
        assert_eq!(first_string(&[]), None);
    }
}
