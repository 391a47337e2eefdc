import { connect } from 'node:net';

/** What a slow client saw. */
export interface Trickled {
  /** From connecting until the server ended the connection; null when it was still open at `giveUpMs`. */
  cutAfterMs: number | null;
  /** Everything the server sent. */
  received: string;
  /** Bytes of `text` written before the cut. */
  written: number;
}

/**
 * A slow client: connects to host:port and writes `text` one byte every `intervalMs`, until the server ends the
 * connection or `giveUpMs` passes (then the client closes it itself).
 */
export function trickle(host: string, port: number, text: string, intervalMs: number, giveUpMs: number): Promise<Trickled> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const started = performance.now();
    let received = '';
    let written = 0;
    let gaveUp = false;
    const timer = setInterval(() => {
      if (written < text.length && socket.writable) socket.write(text[written++]);
    }, intervalMs);
    const giveUp = setTimeout(() => {
      gaveUp = true;
      socket.destroy();
    }, giveUpMs);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => { received += chunk; });
    // The server answering 408 and closing, or resetting the connection, both count as a cut.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') reject(err);
    });
    socket.on('close', () => {
      clearInterval(timer);
      clearTimeout(giveUp);
      resolve({ cutAfterMs: gaveUp ? null : performance.now() - started, received, written });
    });
  });
}

/** A response read off a raw socket: status line, headers (lower-case names) and body. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Writes `request` (raw HTTP/1.1 bytes, possibly lying about its length) in one go and reads one response with a
 * Content-Length; rejects when the connection ends without one or `giveUpMs` passes.
 */
export function rawExchange(host: string, port: number, request: string, giveUpMs: number): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let received = '';
    const timer = setTimeout(() => socket.destroy(new Error(`no complete response in ${giveUpMs} ms: ${JSON.stringify(received.slice(0, 200))}`)), giveUpMs);
    const parse = (): RawResponse | null => {
      const end = received.indexOf('\r\n\r\n');
      if (end < 0) return null;
      const [statusLine, ...lines] = received.slice(0, end).split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      const body = received.slice(end + 4);
      if (Buffer.byteLength(body, 'latin1') < Number(headers['content-length'] ?? Infinity)) return null;
      return { status: Number(statusLine.split(' ')[1]), headers, body: Buffer.from(body, 'latin1').toString('utf8') };
    };
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      received += chunk;
      const response = parse();
      if (!response) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(response);
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`connection closed without a complete response: ${JSON.stringify(received.slice(0, 200))}`));
    });
    socket.write(request);
  });
}
