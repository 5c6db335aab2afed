#!/bin/sh
# A development CA and a server certificate it signs, for localhost, 127.0.0.1 and ::1, made
# with openssl into DIR (created if missing; files already there are kept): the https demo
# (`make run`) and the benchmark's TLS rows (bench/tls.py) use them. Nothing here is for
# production: the CA's key sits beside the certificates, and both expire in 30 days.
#
#   scripts/dev-cert.sh DIR  ->  DIR/ca.pem        the CA to trust (curl --cacert, sse-load --cacert)
#                                DIR/server.pem    the server certificate (tls.public_key)
#                                DIR/server-key.pem its key, PKCS#8 (tls.private_key)
#                                DIR/server-bundle.pem  both in one file (haproxy's crt)
#
# EC P-256 keys: the handshake every benchmark target makes costs the same.
set -eu
dir=${1:?usage: scripts/dev-cert.sh DIR}
mkdir -p "$dir"
cd "$dir"
[ -s server-bundle.pem ] && exit 0
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec ca-key.pem
openssl req -x509 -new -key ca-key.pem -subj "/CN=sse gateway development CA" -days 30 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem 2>/dev/null
ec server-key.pem
openssl req -new -key server-key.pem -subj "/CN=localhost" -out server.csr 2>/dev/null
cat > server.ext <<'EXT'
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
  -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
cat server.pem server-key.pem > server-bundle.pem
