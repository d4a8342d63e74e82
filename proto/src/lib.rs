//! Feast's wire contract as Rust types: every message of `feast.core`, `feast.types`,
//! `feast.serving`, `feast.registry` and `feast.storage`, generated from `protos/` by prost,
//! with tonic clients and servers for the gRPC services. Nothing here is hand-written except
//! the module tree; the object model that services work with lives in `feast-core`.

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

pub mod feast {
    pub mod core {
        include!(concat!(env!("OUT_DIR"), "/feast.core.rs"));
    }
    pub mod types {
        include!(concat!(env!("OUT_DIR"), "/feast.types.rs"));
    }
    pub mod serving {
        include!(concat!(env!("OUT_DIR"), "/feast.serving.rs"));
    }
    pub mod registry {
        include!(concat!(env!("OUT_DIR"), "/feast.registry.rs"));
    }
    pub mod storage {
        include!(concat!(env!("OUT_DIR"), "/feast.storage.rs"));
    }
}

/// `grpc.connector` (Feast's `serving/Connector.proto`).
pub mod grpc {
    pub mod connector {
        include!(concat!(env!("OUT_DIR"), "/grpc.connector.rs"));
    }
}

/// `GrpcServer.proto` declares no package, so its service is `/GrpcFeatureServer/<Rpc>`.
pub mod grpc_server {
    // The generated code names Feast types relative to the crate root.
    use crate::feast;
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

pub use feast::{core, registry, serving, types};

/// feast-rs's own services (not part of Feast's contract).
pub mod feast_rs {
    pub mod materializer {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/feast_rs.materializer.v1.rs"));
        }
    }
}

/// The encoded `FileDescriptorSet` of every Feast proto (for gRPC reflection and protobuf JSON).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/feast_descriptor_set.bin"));

/// A descriptor pool over [`FILE_DESCRIPTOR_SET`], built once.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled by build.rs decodes")
    })
}
