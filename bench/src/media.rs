//! The `media` phase: upload and download throughput of one large file
//! (`--media-mb`), and thumbnail generation: the first thumbnail request
//! of a freshly uploaded photo (`--image-size`) makes every configured
//! size, later ones are served from the store.

use std::{
    io::Cursor,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use image::{ImageFormat, RgbImage};
use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::Method;
use serde_json::Value;

use super::{Args, ArgsRef, Report, login, print_report, run_phase};

pub async fn media_phase(client: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let token = login(client, &ArgsRef::from(args)).await?;
    let size = args.media_mb * 1024 * 1024;
    let mut file = vec![0u8; size];
    StdRng::seed_from_u64(7).fill(&mut file[..]);
    let file = Bytes::from(file);

    let upload_url = format!("{}/_matrix/media/v3/upload?filename=bench.bin", args.url);
    let (url, body, bearer) = (upload_url.clone(), file.clone(), token.clone());
    let report = run_phase(args, "upload", move |client, _, _| {
        let (url, body, bearer) = (url.clone(), body.clone(), bearer.clone());
        async move {
            upload(&client, &url, &bearer, "application/octet-stream", body).await?;
            Ok(())
        }
    })
    .await?;
    print_throughput("upload", &report, size);

    let id = upload(
        client,
        &upload_url,
        &token,
        "application/octet-stream",
        file,
    )
    .await?;
    let download_url = format!("{}/_matrix/client/v1/media/download/{id}", args.url);
    let bearer = token.clone();
    let report = run_phase(args, "download", move |client, _, _| {
        let (url, bearer) = (download_url.clone(), bearer.clone());
        async move {
            let response = client.get(url).bearer_auth(bearer).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "download: {}",
                response.status()
            );
            let body = response.bytes().await?;
            anyhow::ensure!(body.len() == size, "download: {} bytes", body.len());
            Ok(())
        }
    })
    .await?;
    print_throughput("download", &report, size);

    // Thumbnails, one photo at a time so that generation has the cores.
    let (width, height) = args.image_size;
    let photo = Bytes::from(photo(width, height)?);
    println!(
        "  thumbs: source {width}x{height} JPEG of {:.1} MB, {} uploads",
        photo.len() as f64 / 1e6,
        args.thumbnail_images
    );
    let mut firsts = Vec::new();
    let mut last = String::new();
    for _ in 0..args.thumbnail_images {
        let id = upload(client, &upload_url, &token, "image/jpeg", photo.clone()).await?;
        let url = format!(
            "{}/_matrix/client/v1/media/thumbnail/{id}?width=320&height=240&method=scale",
            args.url
        );
        let started = Instant::now();
        let response = client.get(&url).bearer_auth(&token).send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "thumbnail: {}",
            response.status()
        );
        response.bytes().await?;
        firsts.push(started.elapsed());
        last = url;
    }
    firsts.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    println!(
        "  thumbs: first request (decode + every size + store): min {:.0} ms  median {:.0} ms  max {:.0} ms",
        ms(&firsts[0]),
        ms(&firsts[firsts.len() / 2]),
        ms(&firsts[firsts.len() - 1])
    );
    let report = run_phase(args, "request", move |client, _, _| {
        let (url, bearer) = (last.clone(), token.clone());
        async move {
            let response = client.get(url).bearer_auth(bearer).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "thumbnail: {}",
                response.status()
            );
            response.bytes().await?;
            Ok(())
        }
    })
    .await?;
    print_report("stored thumbnail", &report);
    Ok(())
}

fn print_throughput(label: &str, report: &Report, size: usize) {
    let mb = report.requests as f64 * size as f64 / (1024.0 * 1024.0);
    println!(
        "{label:>8}: {:.0} MB/s ({} files of {} MiB)",
        mb / report.elapsed.as_secs_f64(),
        report.requests,
        size / (1024 * 1024)
    );
    print_report(label, report);
}

async fn upload(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    content_type: &str,
    body: Bytes,
) -> anyhow::Result<String> {
    let response = client
        .request(Method::POST, url)
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "upload: {status} {answer}");
    let uri = answer["content_uri"]
        .as_str()
        .with_context(|| format!("upload: no content_uri in {answer}"))?;
    Ok(uri.trim_start_matches("mxc://").to_owned())
}

/// A photo-like JPEG: smooth gradients under sensor-like noise, so that it
/// neither compresses to nothing nor is pure noise.
fn photo(width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(11);
    let image = RgbImage::from_fn(width, height, |x, y| {
        let noise: i32 = rng.gen_range(-12..=12);
        let channel = |v: u32| ((v % 256) as i32 + noise).clamp(0, 255) as u8;
        image::Rgb([channel(x / 8), channel(y / 8), channel((x + y) / 16)])
    });
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)?;
    Ok(bytes)
}

/// `--image-size`: `WIDTHxHEIGHT`.
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("{text}: write WIDTHxHEIGHT, e.g. 4000x3000"))?;
    let number = |n: &str| n.parse::<u32>().map_err(|e| format!("{text}: {e}"));
    Ok((number(w)?, number(h)?))
}
