#!/bin/bash
# rauc-dev-keys.sh DIR: a development signing CA for RAUC bundles in DIR (made once, kept:
# images and bundles built on this machine trust each other). Never commit it, never
# ship a gateway with it: docs/image.md, "Signing production bundles".
#   DIR/ca.key, ca.crt         the CA (the image's /etc/rauc/keyring.pem)
#   DIR/signing.key, .crt      the key and certificate bundles are signed with
set -euo pipefail
dir=${1:?usage: rauc-dev-keys.sh DIR}
if [ -s "$dir/ca.crt" ] && [ -s "$dir/signing.crt" ] && [ -s "$dir/signing.key" ]; then
  exit 0
fi
mkdir -p "$dir"
chmod 0700 "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/ext.cnf" <<'EOF2'
[req]
distinguished_name = dn
[dn]
[fog_ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[fog_signing]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/O=fog-appliance development/CN=fog-appliance development update CA" \
  -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -extensions fog_ca -config "$tmp/ext.cnf"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/O=fog-appliance development/CN=fog-appliance development bundle signing" \
  -config "$tmp/ext.cnf" \
  -keyout "$tmp/signing.key" -out "$tmp/signing.csr"
openssl x509 -req -in "$tmp/signing.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
  -CAcreateserial -days 3650 -extfile "$tmp/ext.cnf" -extensions fog_signing \
  -out "$tmp/signing.crt"
install -m 0600 "$tmp/ca.key" "$tmp/signing.key" "$dir/"
install -m 0644 "$tmp/ca.crt" "$tmp/signing.crt" "$dir/"
echo "    development update CA made in $dir (not for production)" >&2
