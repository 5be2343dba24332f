/**
 * A misbehaving source built from the project's own codecs and channel layer, in the test process:
 * it opens the main channel (hello, waits for ACCEPT), sends the stream header and a configuration,
 * opens the return path, and then does whatever the test scripts — flood clock probes without ever
 * reading the answers, announce page channels on another host, ask for more channels than the
 * destination runs. It never sends a guest.
 */
import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';
import { agreementSet, parseCapabilityList } from '../../shared/options.js';
import { ChannelKind } from '../../shared/protocol/constants.js';
import { encodePageChannels, encodeRamGeometry } from '../../shared/protocol/ram-records.js';
import {
  encodeConfiguration,
  encodeOpenReturnPath,
  encodeSectionPart,
  encodeSectionStart,
  encodeStreamHeader,
} from '../../shared/protocol/stream-codec.js';
import type { ChannelWriter } from '../../shared/socket-io.js';
import { connectChannel } from '../../source/channel.js';

export interface FakeSourceOptions {
  port: number;
  ramSize: number;
  capabilities?: string;
  multifdChannels?: number;
}

export interface FakeSource {
  main: ChannelWriter;
  rp: ChannelWriter;
  /** Sends RAM START (geometry) and a PART announcing page channels on `host`:`ports`. */
  announcePageChannels(host: string, ports: number[]): Promise<void>;
}

const PAGE_SIZE = 4096;

export async function startFakeSource(t: Test, o: FakeSourceOptions): Promise<FakeSource> {
  const conn = { host: '127.0.0.1', port: o.port, migrationId: randomBytes(16), connectTimeoutMs: 5000 };
  const main = await connectChannel(conn, ChannelKind.MAIN, 'main');
  t.teardown(() => {
    main.socket.destroy();
  });
  main.socket.on('error', () => {});
  await main.write(encodeStreamHeader());
  await main.write(
    encodeConfiguration({
      machine: 'switchover-guest',
      pageSize: PAGE_SIZE,
      ramSize: o.ramSize,
      capabilities: agreementSet(parseCapabilityList(o.capabilities ?? 'return-path')),
      multifdChannels: o.multifdChannels ?? 2,
      guest: {},
    }),
  );
  await main.write(encodeOpenReturnPath());
  const rp = await connectChannel(conn, ChannelKind.RETURN_PATH, 'return-path');
  rp.socket.on('error', () => {});
  t.teardown(() => {
    rp.socket.destroy();
  });
  return {
    main,
    rp,
    async announcePageChannels(host, ports) {
      const pageCount = o.ramSize / PAGE_SIZE;
      const header = { sectionId: 0, idstr: 'ram', instanceId: 0, versionId: 1 };
      await main.write(
        encodeSectionStart(
          header,
          encodeRamGeometry({
            pageSize: PAGE_SIZE,
            pageCount,
            blocks: [{ name: 'pc.ram', pages: pageCount }],
          }),
        ),
      );
      await main.write(encodeSectionPart(0, encodePageChannels({ host, ports })));
    },
  };
}
