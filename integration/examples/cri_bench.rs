//! The CRI client of `bench/cri.sh`: drives any CRI v1 runtime on a unix
//! socket (berth-imaged's, containerd's) the way kubelet starts a pod.
//!
//! `cri_bench SOCKET IMAGE cycle N`: N times, a pod with one container —
//! RunPodSandbox, CreateContainer, StartContainer (its process then runs),
//! then StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox —
//! printing for each round `START_MS TEARDOWN_MS`.
//!
//! `cri_bench SOCKET IMAGE hold N`: starts N such pods, prints `ready`, waits
//! until standard input closes, then removes them all.
//!
//! IMAGE is pulled once first (PullImage), outside the figures; pods' logs
//! go under `CRI_BENCH_LOGS` (default: the temporary directory).

use std::time::Instant;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, image, mode, count] = args.as_slice() else {
        eprintln!("usage: cri_bench SOCKET IMAGE cycle|hold N");
        std::process::exit(2);
    };
    let count: usize = count.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = berth_proto::connect(socket).await?;
        let mut images = ImageServiceClient::new(channel.clone());
        images
            .pull_image(cri::PullImageRequest {
                image: Some(image_spec(image)),
                ..Default::default()
            })
            .await?;
        let mut runtime = RuntimeServiceClient::new(channel);
        match mode.as_str() {
            "cycle" => {
                for round in 0..count {
                    let started = Instant::now();
                    let pod = start_pod(&mut runtime, image, round).await?;
                    let start_ms = started.elapsed().as_secs_f64() * 1000.0;
                    let stopping = Instant::now();
                    remove_pod(&mut runtime, &pod).await?;
                    let teardown_ms = stopping.elapsed().as_secs_f64() * 1000.0;
                    println!("{start_ms:.2} {teardown_ms:.2}");
                }
            }
            "hold" => {
                let mut pods = Vec::with_capacity(count);
                for round in 0..count {
                    pods.push(start_pod(&mut runtime, image, round).await?);
                }
                println!("ready");
                let mut sink = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)?;
                for pod in &pods {
                    remove_pod(&mut runtime, pod).await?;
                }
            }
            other => return Err(format!("unknown mode {other:?} (cycle or hold)").into()),
        }
        Ok(())
    })
}

/// Where pods' logs go: `CRI_BENCH_LOGS`, else the temporary directory.
fn log_root() -> String {
    std::env::var("CRI_BENCH_LOGS").unwrap_or_else(|_| std::env::temp_dir().display().to_string())
}

struct Pod {
    sandbox: String,
    container: String,
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// A pod as kubelet asks for one: its own network (CNI), hostname, DNS and
/// log directory, one container that sleeps.
async fn start_pod(
    runtime: &mut RuntimeServiceClient<Channel>,
    image: &str,
    round: usize,
) -> Result<Pod> {
    let name = format!("bench-{}-{round}", std::process::id());
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: name.clone(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: format!("{}/{name}", log_root()),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.99.0.1".into()],
            ..Default::default()
        }),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let sandbox = runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let container = runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "sleeper".into(),
                    attempt: 0,
                }),
                image: Some(image_spec(image)),
                command: vec!["sleep".into(), "100000".into()],
                log_path: "sleeper.log".into(),
                linux: Some(cri::LinuxContainerConfig::default()),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await?
        .into_inner()
        .container_id;
    runtime
        .start_container(cri::StartContainerRequest {
            container_id: container.clone(),
        })
        .await?;
    Ok(Pod { sandbox, container })
}

async fn remove_pod(runtime: &mut RuntimeServiceClient<Channel>, pod: &Pod) -> Result<()> {
    runtime
        .stop_container(cri::StopContainerRequest {
            container_id: pod.container.clone(),
            timeout: 0,
        })
        .await?;
    runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: pod.container.clone(),
        })
        .await?;
    runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.sandbox.clone(),
        })
        .await?;
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.sandbox.clone(),
        })
        .await?;
    Ok(())
}
