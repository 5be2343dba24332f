/**
 * The image digest travels as the last FULL section before EOF: a non-iterable pseudo-device whose
 * state is the digest of the checksums of the last copy sent of every page. The destination compares
 * it with the digest of the checksums it verified before the guest may resume.
 */
import type { SaveHandlers, SectionSink } from '../shared/handlers.js';
import { encodePayload } from '../shared/protocol/payload.js';

export class ImageDigestSaver implements SaveHandlers {
  readonly idstr = 'image-digest';
  readonly instanceId = 0;
  readonly version = 1;
  readonly iterative = false;
  digest = '';

  constructor(
    private readonly ram: {
      digest(): string;
      readonly sentChecksums: BigUint64Array;
      /** every page sent has its checksum recorded (page channels: the workers handed the last round over) */
      handedOver(): Promise<void>;
    },
  ) {}

  async saveComplete(sink: SectionSink): Promise<void> {
    await this.ram.handedOver();
    this.digest = this.ram.digest();
    await sink.emit(encodePayload({ digest: this.digest, pages: this.ram.sentChecksums.length }));
  }
}
