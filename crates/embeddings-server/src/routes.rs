//! The one route table: every path the server answers, the `endpoint`
//! label its requests are counted under, and the guard group it sits in.
//! `app::router` registers exactly these (an exhaustive `match` gives each
//! its handler, so a new endpoint cannot be routed without a label, nor
//! labelled without a route).

/// An endpoint of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /embed_multi`: the native 12-slot API.
    EmbedMulti,
    /// `POST /embed`: TEI's pooled embeddings.
    Embed,
    /// `POST /`: TEI's alias of `/embed`.
    Root,
    /// `POST /embed_sparse`: TEI's sparse embeddings.
    EmbedSparse,
    /// `POST /embed_all`: TEI's per-token embeddings.
    EmbedAll,
    /// `POST /tokenize`: TEI's tokenizer.
    Tokenize,
    /// `POST /decode`: TEI's detokenizer.
    Decode,
    /// `POST /v1/embeddings`: OpenAI's embeddings API.
    OpenAiEmbeddings,
    /// `POST /embeddings`: the un-prefixed alias TEI also serves.
    Embeddings,
    /// `GET /v1/models`: OpenAI's model list.
    OpenAiModels,
    /// `GET /v1/models/{id}`: one model.
    OpenAiModel,
    /// `GET /metrics`.
    Metrics,
    /// `GET /health`.
    Health,
    /// `GET /info`.
    Info,
    /// `GET /alerts`: the in-process alert engine's state.
    Alerts,
    /// `GET /quality`: the quality canary's latest report.
    Quality,
    /// `GET /livez`.
    Livez,
    /// `GET /readyz`.
    Readyz,
    /// `GET /startupz`.
    Startupz,
    /// Anything else (404, and 405 on no route).
    Other,
}

/// One line of [`Endpoint::table`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RouteInfo {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path.
    pub path: &'static str,
    /// Which protocol it speaks (`native` also covers the operational routes).
    pub protocol: Style,
}

/// Which guards a route sits behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// API key and load shedding: the routes that compute.
    Compute,
    /// API key: what describes the service to clients.
    Catalog,
    /// API key only with `--protect-observability`.
    Observability,
    /// Always open: the orchestrator's probes.
    Probe,
}

/// Which protocol a route speaks, and so the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    /// Ours: `{error, kind, request_id}`.
    Native,
    /// OpenAI's: `{"error": {message, type, param, code}, request_id}`.
    #[serde(rename = "openai")]
    OpenAi,
    /// TEI's: `{error, error_type}`.
    Tei,
}

impl Style {
    /// The style of the route `request` is for: its matched route's, or for
    /// a path no route matches, OpenAI's under `/v1/` and ours elsewhere.
    #[must_use]
    pub fn of<B>(request: &axum::http::Request<B>) -> Self {
        match request.extensions().get::<axum::extract::MatchedPath>() {
            Some(p) => Endpoint::from_path(p.as_str()).style(),
            None if request.uri().path().starts_with("/v1/") => Self::OpenAi,
            None => Self::Native,
        }
    }
}

impl Endpoint {
    /// Every endpoint, in label order (`Other` last).
    pub const ALL: [Self; 20] = [
        Self::EmbedMulti,
        Self::Embed,
        Self::Root,
        Self::EmbedSparse,
        Self::EmbedAll,
        Self::Tokenize,
        Self::Decode,
        Self::OpenAiEmbeddings,
        Self::Embeddings,
        Self::OpenAiModels,
        Self::OpenAiModel,
        Self::Metrics,
        Self::Health,
        Self::Info,
        Self::Alerts,
        Self::Quality,
        Self::Livez,
        Self::Readyz,
        Self::Startupz,
        Self::Other,
    ];

    /// The route path (axum syntax); `None` for [`Endpoint::Other`].
    #[must_use]
    pub const fn path(self) -> Option<&'static str> {
        Some(match self {
            Self::EmbedMulti => "/embed_multi",
            Self::Embed => "/embed",
            Self::Root => "/",
            Self::EmbedSparse => "/embed_sparse",
            Self::EmbedAll => "/embed_all",
            Self::Tokenize => "/tokenize",
            Self::Decode => "/decode",
            Self::OpenAiEmbeddings => "/v1/embeddings",
            Self::Embeddings => "/embeddings",
            Self::OpenAiModels => "/v1/models",
            Self::OpenAiModel => "/v1/models/{id}",
            Self::Metrics => "/metrics",
            Self::Health => "/health",
            Self::Info => "/info",
            Self::Alerts => "/alerts",
            Self::Quality => "/quality",
            Self::Livez => "/livez",
            Self::Readyz => "/readyz",
            Self::Startupz => "/startupz",
            Self::Other => return None,
        })
    }

    /// The HTTP method it answers: the computing routes take a body (POST),
    /// the others are reads (GET).
    #[must_use]
    pub const fn method(self) -> &'static str {
        match self.group() {
            Group::Compute => "POST",
            Group::Catalog | Group::Observability | Group::Probe => "GET",
        }
    }

    /// Every route as `METHOD /path`, for messages.
    #[must_use]
    pub fn listing() -> String {
        Self::ALL
            .into_iter()
            .filter_map(|e| e.path().map(|p| format!("{} {p}", e.method())))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `endpoint` label of `embeddings_http_requests_total`.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::EmbedMulti => "embed_multi",
            Self::Embed => "embed",
            Self::Root => "root",
            Self::EmbedSparse => "embed_sparse",
            Self::EmbedAll => "embed_all",
            Self::Tokenize => "tokenize",
            Self::Decode => "decode",
            Self::OpenAiEmbeddings => "openai_embeddings",
            Self::Embeddings => "embeddings",
            Self::OpenAiModels => "openai_models",
            Self::OpenAiModel => "openai_model",
            Self::Metrics => "metrics",
            Self::Health => "health",
            Self::Info => "info",
            Self::Alerts => "alerts",
            Self::Quality => "quality",
            Self::Livez => "livez",
            Self::Readyz => "readyz",
            Self::Startupz => "startupz",
            Self::Other => "other",
        }
    }

    /// The guards in front of it.
    #[must_use]
    pub const fn group(self) -> Group {
        match self {
            Self::EmbedMulti
            | Self::Embed
            | Self::Root
            | Self::EmbedSparse
            | Self::EmbedAll
            | Self::Tokenize
            | Self::Decode
            | Self::OpenAiEmbeddings
            | Self::Embeddings => Group::Compute,
            Self::OpenAiModels | Self::OpenAiModel => Group::Catalog,
            Self::Metrics
            | Self::Health
            | Self::Info
            | Self::Alerts
            | Self::Quality
            | Self::Other => Group::Observability,
            Self::Livez | Self::Readyz | Self::Startupz => Group::Probe,
        }
    }

    /// The endpoint a matched route path belongs to.
    #[must_use]
    pub fn from_path(path: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|e| e.path() == Some(path))
            .unwrap_or(Self::Other)
    }

    /// Whose clients call it, which decides the shape of its errors.
    #[must_use]
    pub const fn style(self) -> Style {
        match self {
            Self::OpenAiEmbeddings | Self::Embeddings | Self::OpenAiModels | Self::OpenAiModel => {
                Style::OpenAi
            }
            Self::Embed
            | Self::Root
            | Self::EmbedSparse
            | Self::EmbedAll
            | Self::Tokenize
            | Self::Decode => Style::Tei,
            _ => Style::Native,
        }
    }

    /// Every route with its method and protocol, for `GET /info`.
    #[must_use]
    pub fn table() -> Vec<RouteInfo> {
        Self::ALL
            .into_iter()
            .filter_map(|e| {
                Some(RouteInfo {
                    method: e.method(),
                    path: e.path()?,
                    protocol: e.style(),
                })
            })
            .collect()
    }

    /// Its position in [`Endpoint::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|e| *e == self)
            .unwrap_or(Self::ALL.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_maps_back_to_its_endpoint_and_labels_are_distinct() {
        let mut labels = std::collections::BTreeSet::new();
        for e in Endpoint::ALL {
            assert!(labels.insert(e.label()), "{} twice", e.label());
            if let Some(path) = e.path() {
                assert_eq!(Endpoint::from_path(path), e);
            }
            assert_eq!(Endpoint::ALL[e.index()], e);
        }
        assert_eq!(Endpoint::from_path("/nowhere"), Endpoint::Other);
    }
}
