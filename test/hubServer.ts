// A loopback stand-in for the Hugging Face hub, serving repos from local directories the way the hub does:
//   HEAD/GET /{org}/{name}/resolve/{rev}/{file}
//     "LFS" files (*.safetensors, *.bin, or over lfsThreshold): 302 to an absolute /cdn/<sha256> URL, carrying
//       X-Repo-Commit, X-Linked-Etag: "<sha256>", X-Linked-Size
//     regular files: 200 with ETag: "<git blob sha1>", Content-Length, X-Repo-Commit
//     errors: 404 X-Error-Code EntryNotFound / RepoNotFound / RevisionNotFound, 401/403 GatedRepo
//   GET/HEAD /cdn/<sha256>  with Range support (206 + Content-Range, 416)
// plus request logging, a one-shot connection cut after N body bytes, content corruption and renamed repos.
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as path from 'path';

export interface RepoSpec {
  /** Directory whose files form the repo (subdirectories become 'a/b' paths). */
  dir?: string;
  /** Extra or overriding files, by repo path. */
  extra?: Record<string, Buffer | string>;
  /** Default: sha1 of the repo id. */
  commit?: string;
  /** When set, the repo is gated: only `Authorization: Bearer <gatedToken>` gets in. */
  gatedToken?: string;
}

export interface LoggedRequest {
  method: string;
  path: string;
  range?: string;
  authorization?: string;
}

interface Entry {
  data: Buffer;
  sha256: string;
  gitSha1: string;
  lfs: boolean;
}

export class HubServer {
  readonly requests: LoggedRequest[] = [];
  /** Cut the connection after this many body bytes of the next CDN GET (one shot). */
  cutNextCdnAfter: number | null = null;
  /** When set, CDN bodies have the byte at this offset flipped (the advertised hash no longer matches). */
  corruptCdnAt: number | null = null;
  /** Old repo id → new repo id, answered with a relative 307 as the hub does for renamed repos. */
  readonly renamed: Record<string, string> = {};
  lfsThreshold = 1 << 20;
  /** When set, Range headers are ignored (full 200 answers), as some proxies do. */
  ignoreRange = false;

  private server: http.Server;
  private entries = new Map<string, Map<string, Entry>>(); // repo → file → entry
  private bySha = new Map<string, Entry>();
  private port = 0;

  constructor(private readonly repos: Record<string, RepoSpec>) {
    this.server = http.createServer((req, res) => {
      try {
        this.handle(req, res);
      } catch (e) {
        res.statusCode = 500;
        res.end(String(e));
      }
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  commitOf(repo: string): string {
    return this.repos[repo].commit ?? createHash('sha1').update(`commit:${repo}`).digest('hex');
  }

  /** Requests matching the filter (method and/or a substring of the path). */
  count(filter: { method?: string; path?: string; range?: boolean } = {}): number {
    return this.requests.filter(
      (r) =>
        (!filter.method || r.method === filter.method) &&
        (!filter.path || r.path.includes(filter.path)) &&
        (filter.range === undefined || Boolean(r.range) === filter.range),
    ).length;
  }

  reset(): void {
    this.requests.length = 0;
    this.cutNextCdnAfter = null;
    this.corruptCdnAt = null;
    this.ignoreRange = false;
  }

  /** The sha256 the server advertises for a file (its CDN name). */
  sha256Of(repo: string, file: string): string {
    const e = this.entry(repo, file);
    if (!e) throw new Error(`no ${file} in ${repo}`);
    return e.sha256;
  }

  private entry(repo: string, file: string): Entry | null {
    let m = this.entries.get(repo);
    if (!m) this.entries.set(repo, (m = new Map()));
    const hit = m.get(file);
    if (hit) return hit;
    const spec = this.repos[repo];
    let data: Buffer | null = null;
    if (spec.extra && file in spec.extra) {
      const v = spec.extra[file];
      data = typeof v === 'string' ? Buffer.from(v) : v;
    } else if (spec.dir && !file.split('/').includes('..')) {
      const p = path.join(spec.dir, ...file.split('/'));
      if (fs.existsSync(p) && fs.statSync(p).isFile()) data = fs.readFileSync(p);
    }
    if (!data) return null;
    const e: Entry = {
      data,
      sha256: createHash('sha256').update(data).digest('hex'),
      gitSha1: createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex'),
      lfs: data.length > this.lfsThreshold || /\.(safetensors|bin)$/.test(file),
    };
    m.set(file, e);
    if (e.lfs) this.bySha.set(e.sha256, e);
    return e;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    const method = req.method ?? 'GET';
    this.requests.push({
      method,
      path: url.pathname,
      range: req.headers.range,
      authorization: req.headers.authorization,
    });
    const segs = url.pathname.split('/').slice(1).map(decodeURIComponent);
    if (segs[0] === 'cdn' && segs.length === 2) {
      const e = this.bySha.get(segs[1]);
      if (!e) return this.fail(res, 404, 'EntryNotFound');
      return this.sendBody(req, res, e, true);
    }
    const at = segs[1] === 'resolve' ? 1 : segs[2] === 'resolve' ? 2 : -1;
    if (at < 0 || segs.length < at + 3) return this.fail(res, 404, 'RepoNotFound');
    const repo = segs.slice(0, at).join('/');
    const rev = segs[at + 1];
    const file = segs.slice(at + 2).join('/');
    const moved = this.renamed[repo];
    if (moved) {
      res.writeHead(307, { Location: `/${moved}/resolve/${encodeURIComponent(rev)}/${file}` });
      return void res.end();
    }
    const spec = this.repos[repo];
    if (!spec) return this.fail(res, 404, 'RepoNotFound');
    if (spec.gatedToken && req.headers.authorization !== `Bearer ${spec.gatedToken}`) {
      return this.fail(res, req.headers.authorization ? 403 : 401, 'GatedRepo');
    }
    const commit = this.commitOf(repo);
    if (rev !== 'main' && rev !== commit) return this.fail(res, 404, 'RevisionNotFound');
    const e = this.entry(repo, file);
    res.setHeader('X-Repo-Commit', commit);
    if (!e) return this.fail(res, 404, 'EntryNotFound');
    if (e.lfs) {
      res.writeHead(302, {
        Location: `${this.url}/cdn/${e.sha256}`,
        'X-Linked-Etag': `"${e.sha256}"`,
        'X-Linked-Size': String(e.data.length),
        ETag: `"${e.gitSha1}"`, // the hub's ETag here is of the LFS pointer; X-Linked-Etag wins
        'Content-Length': '0',
      });
      return void res.end();
    }
    res.setHeader('ETag', `"${e.gitSha1}"`);
    this.sendBody(req, res, e, false);
  }

  private fail(res: http.ServerResponse, status: number, code: string): void {
    const body = JSON.stringify({ error: code });
    res.writeHead(status, { 'X-Error-Code': code, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  private sendBody(req: http.IncomingMessage, res: http.ServerResponse, e: Entry, cdn: boolean): void {
    const size = e.data.length;
    let start = 0;
    let end = size - 1;
    const m = this.ignoreRange ? null : /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      if (m[2]) end = Math.min(Number(m[2]), size - 1);
      if (start >= size || start > end) {
        res.writeHead(416, { 'Content-Range': `bytes */${size}` });
        return void res.end();
      }
      res.statusCode = 206;
      res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
    } else {
      res.statusCode = 200;
    }
    res.setHeader('Content-Length', String(end - start + 1));
    res.setHeader('Accept-Ranges', 'bytes');
    if (req.method === 'HEAD') return void res.end();
    let body = e.data.subarray(start, end + 1);
    if (cdn && this.corruptCdnAt !== null && this.corruptCdnAt >= start && this.corruptCdnAt <= end) {
      body = Buffer.from(body);
      body[this.corruptCdnAt - start] ^= 0xff;
    }
    if (cdn && this.cutNextCdnAfter !== null) {
      const n = Math.min(this.cutNextCdnAfter, body.length - 1);
      this.cutNextCdnAfter = null;
      res.write(body.subarray(0, n), () => setTimeout(() => req.socket.destroy(), 20));
      return;
    }
    res.end(body);
  }
}

export async function startHubServer(repos: Record<string, RepoSpec>): Promise<HubServer> {
  return new HubServer(repos).start();
}
