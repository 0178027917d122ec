//! A small typed client of the zeroshot HTTP API, for the CLI's server commands
//! (`zeroshot batch ...`, `zeroshot classify --url`). Answers keep the body as the
//! server sent it, so the CLI prints the API's JSON in the API's field order.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Largest part of an unexpected (non-API) error body that is shown.
const MAX_SHOWN_BODY: usize = 600;
/// Upload read size: large enough that a multi-GB file is not a million tiny writes.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Why a call failed. [`ClientError::Api`] carries the API's own error object.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with its JSON error shape.
    #[error("{error}")]
    Api { status: u16, error: ApiErrorBody },
    /// Something else answered an error (a proxy, S3 refusing an upload).
    #[error("{url} answered HTTP {status}: {body}")]
    Unexpected {
        url: String,
        status: u16,
        body: String,
    },
    /// The server's answer was not the JSON the API documents.
    #[error("{url}: unexpected answer: {error}")]
    Decode {
        url: String,
        error: serde_json::Error,
    },
    /// Connecting, sending or receiving failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// `--url` is not an absolute http(s) URL.
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Reading the file to upload.
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Writing downloaded results.
    #[error("writing the results: {0}")]
    Write(std::io::Error),
    /// The job was created with its items inline: it has no upload form.
    #[error("job {0} takes no upload (its input was sent inline)")]
    NoUploadForm(String),
}

/// `{"error": {"type", "message", "param"}}`'s inner object.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiErrorBody {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub param: Option<String>,
}

impl fmt::Display for ApiErrorBody {
    /// `message (type, param p)`: what a person reads first, then what a script matches.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.param {
            Some(param) => write!(f, "{} ({}, param {param})", self.message, self.kind),
            None => write!(f, "{} ({})", self.message, self.kind),
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ApiErrorBody,
}

/// A JSON answer: parsed into `T` for the fields the CLI acts on, and kept as sent.
#[derive(Debug)]
pub struct Answer<T> {
    pub value: T,
    text: String,
}

impl<T> Answer<T> {
    /// The body indented, fields in the order the server sent them.
    pub fn pretty(&self) -> String {
        let mut out = Vec::new();
        let mut from = serde_json::Deserializer::from_str(&self.text);
        let mut to = serde_json::Serializer::pretty(&mut out);
        serde_transcode::transcode(&mut from, &mut to)
            .expect("the body was parsed as JSON already");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// The server's own request and response types: the client sends and reads what the
/// server reads and writes.
pub use crate::wire::{
    ClassifyRequest, CreateRequest, CreatedJob, Job, JobList, JobStatus, ResultsLink, UsageReport,
    WebhookSecret,
};

/// One server, one API key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    api_key: Option<String>,
}

impl Client {
    /// A client of the server at `base_url` (a path prefix, as behind a proxy, is kept).
    pub fn new(base_url: &str, api_key: Option<&str>) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: base_url.to_string(),
            reason,
        };
        let base = Url::parse(base_url).map_err(|err| bad(err.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("expected http://HOST[:PORT] or https://...".into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("zeroshot/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base,
            api_key: api_key.map(str::to_string),
        })
    }

    /// `base` + path segments, each escaped (an id cannot reach another endpoint).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: the base URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// A request to the API, with the key when there is one.
    fn authorized(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// An API call with the key; JSON in, JSON out.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Answer<T>, ClientError> {
        let mut request = self.authorized(method, url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = checked(request.send().await?).await?;
        let text = response.text().await?;
        let value = serde_json::from_str(&text).map_err(|error| ClientError::Decode {
            url: url.to_string(),
            error,
        })?;
        Ok(Answer { value, text })
    }

    /// `POST /v1/classify`; the answer is printed as is, so it stays untyped.
    pub async fn classify(
        &self,
        request: &ClassifyRequest,
    ) -> Result<Answer<serde_json::Value>, ClientError> {
        self.call(Method::POST, self.url(&["v1", "classify"]), Some(request))
            .await
    }

    /// `POST /v1/batch`: a pending job and its upload form.
    pub async fn create_job(
        &self,
        request: &CreateRequest,
    ) -> Result<Answer<CreatedJob>, ClientError> {
        self.call(Method::POST, self.url(&["v1", "batch"]), Some(request))
            .await
    }

    /// Uploads `path` with the job's form: every field, then `file`, streamed from
    /// disk with a Content-Length (S3 presigned POSTs need one). `sent` hears of every
    /// chunk's size as it goes.
    pub async fn upload(
        &self,
        job: &CreatedJob,
        path: &Path,
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(), ClientError> {
        let read_error = |error| ClientError::Read {
            path: path.to_path_buf(),
            error,
        };
        let file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let length = file.metadata().await.map_err(read_error)?.len();
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK)
            .inspect_ok(move |chunk| sent(chunk.len() as u64));
        let name = path.file_name().map_or_else(
            || "input.ndjson".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let file_part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(chunks),
            length,
        )
        .file_name(name);
        let (Some(url), Some(fields)) = (&job.upload_url, &job.upload_fields) else {
            return Err(ClientError::NoUploadForm(job.job.job_id.clone()));
        };
        let form = fields
            .iter()
            .fold(reqwest::multipart::Form::new(), |form, (name, value)| {
                form.text(name.clone(), value.clone())
            })
            .part("file", file_part);
        // No API key: the signed form is the authorisation, and S3 must not see the key.
        let response = self.http.post(url).multipart(form).send().await?;
        checked(response).await?;
        Ok(())
    }

    /// `POST /v1/batch/{id}/start`.
    pub async fn start_job(&self, id: &str) -> Result<Answer<Job>, ClientError> {
        let url = self.url(&["v1", "batch", id, "start"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `GET /v1/batch/{id}`.
    pub async fn job(&self, id: &str) -> Result<Answer<Job>, ClientError> {
        let url = self.url(&["v1", "batch", id]);
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `GET /v1/batch?limit=&after=`: the account's jobs, newest first.
    pub async fn list_jobs(
        &self,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Answer<JobList>, ClientError> {
        let mut url = self.url(&["v1", "batch"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", after);
        }
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `GET /v1/batch/{id}/results`: a time-limited download link.
    pub async fn results_link(&self, id: &str) -> Result<Answer<ResultsLink>, ClientError> {
        let url = self.url(&["v1", "batch", id, "results"]);
        self.call(Method::GET, url, None::<&()>).await
    }

    /// Streams a download link's body into `out`; returns the bytes written.
    pub async fn download(
        &self,
        link: &ResultsLink,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        // No API key: the link is signed (and may point at S3).
        let response = checked(self.http.get(&link.url).send().await?).await?;
        let mut body = response.bytes_stream();
        let mut written = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await.map_err(ClientError::Write)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(ClientError::Write)?;
        Ok(written)
    }

    /// `POST /v1/batch/{id}/cancel`.
    pub async fn cancel_job(&self, id: &str) -> Result<Answer<Job>, ClientError> {
        let url = self.url(&["v1", "batch", id, "cancel"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `GET /v1/webhooks/secret`, or with `rotate` `POST`: the webhook signing secret.
    pub async fn webhook_secret(&self, rotate: bool) -> Result<Answer<WebhookSecret>, ClientError> {
        let method = if rotate { Method::POST } else { Method::GET };
        let url = self.url(&["v1", "webhooks", "secret"]);
        self.call(method, url, None::<&()>).await
    }

    /// `GET /v1/usage?from=&to=`: usage per day (the server's defaults for `None`).
    pub async fn usage(
        &self,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Answer<UsageReport>, ClientError> {
        let mut url = self.url(&["v1", "usage"]);
        for (name, value) in [("from", from), ("to", to)] {
            if let Some(value) = value {
                url.query_pairs_mut().append_pair(name, value);
            }
        }
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `DELETE /v1/batch/{id}`: the job, its input and its results.
    pub async fn delete_job(&self, id: &str) -> Result<(), ClientError> {
        let request = self.authorized(Method::DELETE, self.url(&["v1", "batch", id]));
        checked(request.send().await?).await?;
        Ok(())
    }
}

/// The response if it is a success; else its error: the API's shape when it has it.
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().clone();
    let text = response.text().await?;
    Err(match serde_json::from_str::<ErrorEnvelope>(&text) {
        Ok(envelope) => ClientError::Api {
            status: status.as_u16(),
            error: envelope.error,
        },
        Err(_) => ClientError::Unexpected {
            // The query of a signed link is a credential: keep it out of messages.
            url: format!("{}{}", url.origin().ascii_serialization(), url.path()),
            status: status.as_u16(),
            body: text.trim().chars().take(MAX_SHOWN_BODY).collect(),
        },
    })
}
