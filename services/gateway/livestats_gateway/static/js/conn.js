// @ts-check
// A WebSocket that reconnects: exponential backoff with full jitter, resume from the last event
// id (`since`), and a watchdog for half-open connections (the gateway sends a heartbeat frame
// every few seconds, so silence means the connection is dead even if the browser has not noticed).

import { CloseCode, PageCloseCode } from "./protocol.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15_000;
const SILENCE_MS = 20_000;

// Close codes after which reconnecting cannot help (docs/api.md, "WebSocket protocol").
/** @type {Record<number, string>} */
export const FATAL_CLOSES = {
  [CloseCode.UNSUPPORTED_DATA]: "the page sent a binary message",
  [CloseCode.MESSAGE_TOO_BIG]: "the page sent an oversized message",
  [CloseCode.BAD_REQUEST]: "invalid resume position",
  [CloseCode.UNAUTHORIZED]: "not logged in, or the token was revoked",
  [CloseCode.FORBIDDEN]: "forbidden (origin or scope)",
  [CloseCode.NOT_FOUND]: "not found",
  [CloseCode.INVALID_RUN_ID]: "invalid run id",
};

/** The server's clock minus ours (ms), from the timestamps the gateway sends: run ages and
 * deadlines are computed on the server's clock, whatever this machine's clock says. */
export const clock = {
  offsetMs: 0,
  observe(serverTs) {
    if (typeof serverTs === "number") this.offsetMs = serverTs - Date.now();
  },
  now() {
    return Date.now() + this.offsetMs;
  },
};

export class LiveSocket {
  /**
   * @param {string} path e.g. "/ws/runs/ID"
   * @param {{onFrame: (frame: object) => void, onState: (state: string, detail?: object) => void,
   *          since?: () => string | null}} handlers
   */
  constructor(path, handlers) {
    this.path = path;
    this.handlers = handlers;
    this.attempt = 0;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.stopped = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.watchdog = undefined;
  }

  start() {
    this.stopped = false;
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
    if (this.ws) this.ws.close(PageCloseCode.NORMAL, "page closed");
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const since = this.handlers.since?.();
    const query = since ? `?since=${encodeURIComponent(since)}` : "";
    return `${scheme}//${location.host}${this.path}${query}`;
  }

  connect() {
    this.handlers.onState(this.attempt === 0 ? "connecting" : "reconnecting", { attempt: this.attempt });
    // The session cookie authenticates the socket; the page never sees the token.
    const ws = (this.ws = new WebSocket(this.url()));
    let greeted = false;
    ws.onmessage = (message) => {
      this.armWatchdog();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch (err) {
        console.error("livestats: malformed frame from the gateway", err);
        return;
      }
      // The first frame (`hello` on a run, `index` on the run list) means the gateway took us.
      if (!greeted) {
        greeted = true;
        this.attempt = 0; // a working connection resets the backoff
        this.handlers.onState("live");
      }
      if (frame.type === "hello" || frame.type === "heartbeat" || frame.type === "index") clock.observe(frame.server_ts);
      this.handlers.onFrame(frame);
    };
    ws.onopen = () => this.armWatchdog();
    ws.onclose = (event) => {
      clearTimeout(this.watchdog);
      if (this.ws !== ws || this.stopped) return;
      const fatal = FATAL_CLOSES[event.code];
      if (fatal) {
        this.handlers.onState("closed", { code: event.code, reason: event.reason || fatal });
        return;
      }
      this.scheduleRetry(event);
    };
  }

  armWatchdog() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      console.warn("livestats: no frame for", SILENCE_MS, "ms; reconnecting");
      this.ws?.close(PageCloseCode.SILENT, "silent");
      this.scheduleRetry({ code: PageCloseCode.SILENT, reason: "no frames" });
    }, SILENCE_MS);
  }

  scheduleRetry(event) {
    if (this.stopped || this.retryTimer !== undefined) return;
    this.ws = null;
    this.attempt += 1;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (this.attempt - 1));
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2); // jitter: many tabs do not reconnect in step
    this.handlers.onState("reconnecting", { attempt: this.attempt, delayMs: delay, code: event.code, reason: event.reason });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, delay);
  }
}
