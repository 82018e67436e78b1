//! The plain HTTP(S) client for what is not an AWS API (webhooks, the CLI's event stream): the
//! hyper client and rustls stack the AWS SDK already builds, trusting the system's roots.

pub type Client<B> = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>;

/// An HTTP/1.1 client for http:// and https:// URLs; fails when the system has no TLS roots.
pub fn client<B>() -> std::io::Result<Client<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}
