//! The gRPC side of the feature server: `feast.serving.ServingService` (GetFeastServingInfo,
//! GetOnlineFeatures) and `GrpcFeatureServer` (GetOnlineFeatures, Push, WriteToOnlineStore),
//! served on the same port as the HTTP routes (see [`crate::http::router`]).
//!
//! Errors carry Feast's error envelope as the status message, as the registry server's do.
//! Differences from Feast's Python `GrpcFeatureServer`, on purpose: an empty `to` in a push
//! means `online` (Feast: INTERNAL "is not a supported push format"), and a bad column or
//! value is INVALID_ARGUMENT naming it (Feast: INTERNAL).

use std::sync::Arc;

use feast_core::value::value_to_json;
use feast_proto::grpc_server::grpc_feature_server_server::GrpcFeatureServer;
use feast_proto::grpc_server::{
    PushRequest, PushResponse, WriteToOnlineStoreRequest, WriteToOnlineStoreResponse,
};
use feast_proto::serving::serving_service_server::ServingService;
use feast_proto::serving::{
    GetFeastServingInfoRequest, GetFeastServingInfoResponse, GetOnlineFeaturesRequest,
    GetOnlineFeaturesResponse, get_online_features_request::Kind,
};
use feast_proto::types::Value;
use feast_proto::types::value::Val;
use serde_json::Value as Json;
use tonic::{Request, Response, Status};

use crate::http::FeatureServer;
use crate::serving::{EntityValues, FeatureSelection, OnlineRequest, ServeError};
use crate::write::{Frame, PushMode};
use feast_auth::User;

/// The Feast release whose serving protocol this server speaks, reported by
/// `GetFeastServingInfo`.
pub const FEAST_VERSION: &str = "0.67.0";

/// Both gRPC services over one [`FeatureServer`].
#[derive(Clone)]
pub struct GrpcServices {
    server: Arc<FeatureServer>,
}

impl GrpcServices {
    pub fn new(server: Arc<FeatureServer>) -> Self {
        GrpcServices { server }
    }
}

/// A serving error as a gRPC status carrying Feast's error envelope.
pub fn to_status(e: &ServeError) -> Status {
    let code = match e.http_status() {
        400 | 422 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::Aborted,
        501 => tonic::Code::Unimplemented,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    if code == tonic::Code::Internal || code == tonic::Code::Unavailable {
        tracing::warn!(message = "gRPC request failed", error = %e.to_feast());
    }
    Status::new(code, e.to_feast().to_error_detail())
}

fn online_request(r: GetOnlineFeaturesRequest) -> Result<OnlineRequest, ServeError> {
    let features = match r.kind {
        Some(Kind::FeatureService(s)) => FeatureSelection::Service(s),
        Some(Kind::Features(list)) => FeatureSelection::Refs(list.val),
        None => {
            return Err(ServeError::Unprocessable(
                "the request names neither a feature_service nor features".into(),
            ));
        }
    };
    Ok(OnlineRequest {
        entities: r
            .entities
            .into_iter()
            .map(|(name, values)| (name, EntityValues::Proto(values.val)))
            .collect(),
        features,
        full_feature_names: r.full_feature_names,
        include_feature_view_version_metadata: r.include_feature_view_version_metadata,
    })
}

/// The one row of a push / write request: `features` (strings, typed by the view's schema)
/// or `typed_features` (values), not both.
fn row_frame(
    features: std::collections::BTreeMap<String, String>,
    typed: std::collections::BTreeMap<String, Value>,
) -> Result<Frame, Status> {
    if !features.is_empty() && !typed.is_empty() {
        return Err(Status::invalid_argument(
            "Only one of features or typed_features may be set, not both",
        ));
    }
    if typed.is_empty() {
        return Ok(Frame::from_row(
            features.into_iter().map(|(k, v)| (k, Json::String(v))),
        ));
    }
    Ok(Frame::from_row(typed.into_iter().map(|(k, v)| {
        let json = match &v.val {
            // Timestamps travel as epoch seconds; the frame reads ISO strings.
            Some(Val::UnixTimestampVal(secs)) => chrono::DateTime::from_timestamp(*secs, 0)
                .map_or(Json::Null, |dt| Json::String(dt.to_rfc3339())),
            _ => value_to_json(&v),
        };
        (k, json)
    })))
}

impl GrpcServices {
    async fn get_online_features(
        &self,
        endpoint: &str,
        request: Request<GetOnlineFeaturesRequest>,
    ) -> Result<GetOnlineFeaturesResponse, Status> {
        let user = request.extensions().get::<User>().cloned();
        let request = online_request(request.into_inner()).map_err(|e| to_status(&e))?;
        let response = self
            .server
            .get_online_features(endpoint, user.as_ref(), &request)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(response.to_proto())
    }
}

#[tonic::async_trait]
impl ServingService for GrpcServices {
    async fn get_feast_serving_info(
        &self,
        _request: Request<GetFeastServingInfoRequest>,
    ) -> Result<Response<GetFeastServingInfoResponse>, Status> {
        Ok(Response::new(GetFeastServingInfoResponse {
            version: FEAST_VERSION.to_string(),
        }))
    }

    async fn get_online_features(
        &self,
        request: Request<GetOnlineFeaturesRequest>,
    ) -> Result<Response<GetOnlineFeaturesResponse>, Status> {
        GrpcServices::get_online_features(
            self,
            "/feast.serving.ServingService/GetOnlineFeatures",
            request,
        )
        .await
        .map(Response::new)
    }
}

#[tonic::async_trait]
impl GrpcFeatureServer for GrpcServices {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let user = request.extensions().get::<User>().cloned();
        let r = request.into_inner();
        let frame = row_frame(r.features, r.typed_features)?;
        let to = if r.to.is_empty() {
            PushMode::Online
        } else {
            PushMode::parse(&r.to).map_err(|e| to_status(&e))?
        };
        self.server
            .push(
                "/GrpcFeatureServer/Push",
                user.as_ref(),
                &r.stream_feature_view,
                &frame,
                to,
            )
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(PushResponse { status: true }))
    }

    async fn write_to_online_store(
        &self,
        request: Request<WriteToOnlineStoreRequest>,
    ) -> Result<Response<WriteToOnlineStoreResponse>, Status> {
        let user = request.extensions().get::<User>().cloned();
        let r = request.into_inner();
        let frame = row_frame(r.features, r.typed_features)?;
        self.server
            .write_to_online_store(
                "/GrpcFeatureServer/WriteToOnlineStore",
                user.as_ref(),
                &r.feature_view_name,
                &frame,
            )
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(WriteToOnlineStoreResponse { status: true }))
    }

    async fn get_online_features(
        &self,
        request: Request<GetOnlineFeaturesRequest>,
    ) -> Result<Response<GetOnlineFeaturesResponse>, Status> {
        GrpcServices::get_online_features(self, "/GrpcFeatureServer/GetOnlineFeatures", request)
            .await
            .map(Response::new)
    }
}
