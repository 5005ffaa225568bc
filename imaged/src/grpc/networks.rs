//! The Networks gRPC service (`proto/berth/v1/networks.proto`) over
//! [`crate::networks`].

use berth_net::network::Network;
use berth_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::grpc::workloads::{
    containers_status, networks_status, tasks_status, timestamp, Workloads,
};

fn network(n: &Network, containers: Vec<String>) -> pb::Network {
    pb::Network {
        name: n.name.clone(),
        id: n.id.clone(),
        driver: "bridge".into(),
        bridge: n.bridge.clone(),
        subnet: n.subnet.to_string(),
        gateway: n.subnet.gateway().to_string(),
        labels: n.labels.clone().into_iter().collect(),
        created: timestamp(n.created),
        containers,
    }
}

#[tonic::async_trait]
impl pb::networks_server::Networks for Workloads {
    async fn create(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = request.into_inner();
        let subnet =
            if r.subnet.is_empty() {
                None
            } else {
                Some(r.subnet.parse().map_err(|e: berth_net::network::Error| {
                    Status::invalid_argument(e.to_string())
                })?)
            };
        let networks = self.tasks.containers.networks.clone();
        let created = tokio::task::spawn_blocking(move || {
            networks.create(&r.name, subnet, r.labels.into_iter().collect())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(networks_status)?;
        Ok(Response::new(network(&created, Vec::new())))
    }

    async fn get(
        &self,
        request: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let networks = &self.tasks.containers.networks;
        let found = networks
            .get(&request.into_inner().name)
            .map_err(networks_status)?;
        let users = networks.users(&found.name).map_err(networks_status)?;
        Ok(Response::new(network(&found, users)))
    }

    async fn list(
        &self,
        _: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let networks = &self.tasks.containers.networks;
        let mut out = Vec::new();
        for n in networks.list().map_err(networks_status)? {
            let users = networks.users(&n.name).map_err(networks_status)?;
            out.push(network(&n, users));
        }
        Ok(Response::new(pb::ListNetworksResponse { networks: out }))
    }

    async fn connect_container(
        &self,
        request: Request<pb::ConnectNetworkRequest>,
    ) -> Result<Response<pb::ConnectNetworkResponse>, Status> {
        let r = request.into_inner();
        let endpoint = pb::NetworkEndpoint {
            network: r.network,
            aliases: r.aliases,
            ip: r.ip,
        };
        self.tasks
            .connect_container(&r.container, endpoint)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::ConnectNetworkResponse {}))
    }

    async fn disconnect_container(
        &self,
        request: Request<pb::DisconnectNetworkRequest>,
    ) -> Result<Response<pb::DisconnectNetworkResponse>, Status> {
        let r = request.into_inner();
        self.tasks
            .disconnect_container(&r.container, &r.network)
            .await
            .map_err(tasks_status)?;
        Ok(Response::new(pb::DisconnectNetworkResponse {}))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let name = request.into_inner().name;
        let networks = self.tasks.containers.networks.clone();
        let target = networks.get(&name).map_err(networks_status)?;
        // Containers whose settings name it, running or not (docker refuses
        // to remove a network any container is connected to).
        let named_by: Vec<String> = self
            .tasks
            .containers
            .list()
            .map_err(containers_status)?
            .into_iter()
            .filter(|c| {
                let settings = c.settings();
                let wanted = settings.network;
                wanted == target.name
                    || (!wanted.is_empty() && target.id.starts_with(&wanted))
                    || settings
                        .more_networks
                        .iter()
                        .any(|e| e.network == target.name)
            })
            .map(|c| c.name)
            .collect();
        tokio::task::spawn_blocking(move || networks.remove(&target.name, &named_by))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(networks_status)?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }
}
