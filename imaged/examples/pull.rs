//! A minimal gRPC client of berth-imaged for the benchmark (until berthctl
//! exists): `pull SOCKET REFERENCE` pulls and unpacks, printing the image's
//! name and chain ID.

use berth_proto::v1 as pb;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(reference)) = (args.next(), args.next()) else {
        eprintln!("usage: pull SOCKET REFERENCE");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = berth_proto::connect(&socket).await?;
        let mut images = pb::images_client::ImagesClient::new(channel);
        let mut stream = images
            .pull(pb::PullRequest {
                reference,
                ..Default::default()
            })
            .await?
            .into_inner();
        while let Some(progress) = stream.message().await? {
            if let Some(image) = progress.image {
                println!("{} {}", image.name, image.chain_id);
            }
        }
        Ok(())
    })
}
