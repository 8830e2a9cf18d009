#!/bin/sh
# nginx entrypoint hook: a self-signed certificate for the web app on first start, kept in the
# /etc/nginx/tls volume. Mount your own cert.pem and key.pem there to use a real one.
set -eu
dir=/etc/nginx/tls
if [ -s "$dir/cert.pem" ] && [ -s "$dir/key.pem" ]; then
  exit 0
fi
cn="${KILN_WEB_HOSTNAME:-localhost}"
openssl req -x509 -newkey rsa:2048 -nodes -days 825 \
  -subj "/CN=$cn" -addext "subjectAltName=DNS:$cn,DNS:localhost,IP:127.0.0.1" \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
chmod 600 "$dir/key.pem"
echo "kiln-tls: generated a self-signed certificate for $cn in $dir"
