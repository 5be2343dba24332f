/** Load half of the image-digest pseudo-device (see source/image-digest.ts). */
import { ErrorCode, ProtocolError } from '../shared/errors.js';
import type { LoadHandlers } from '../shared/handlers.js';
import { decodePayload } from '../shared/protocol/payload.js';
import type { SectionPayload } from '../shared/protocol/section-payload.js';

export class ImageDigestLoader implements LoadHandlers {
  readonly idstr = 'image-digest';
  readonly instanceId = 0;
  readonly version = 1;
  readonly minVersion = 1;
  digest: string | null = null;

  loadState(_kind: string, payload: SectionPayload): void {
    const body = decodePayload(payload.bytes(), 'image-digest');
    if (typeof body.digest !== 'string')
      throw new ProtocolError(ErrorCode.MALFORMED, 'image-digest: no digest', { section: 'image-digest' });
    this.digest = body.digest;
  }
}
