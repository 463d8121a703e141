import fs from 'node:fs';
import path from 'node:path';
import { encrypt, generateIdentity } from '../crypto/age.js';
import { BakkerError, errMessage, usageError } from '../errors.js';
import type { Output } from '../ui/output.js';
import { parse } from './args.js';
import { EXIT } from './exit-codes.js';

export const help = `Usage: bakker key generate --out FILE [--passphrase-env VAR] [--json]

Makes an age X25519 identity for encrypted stores and prints its recipient (age1...). Backing up
needs only the recipient; restore, verify of contents and diff need the identity, so keep FILE
off the server being backed up if it must not read its own backups. The file is the one age-keygen
writes: 'age -d -i FILE' decrypts any stored file with it.

Options:
  -o, --out FILE           where the identity goes (made with mode 0600; never overwritten)
      --passphrase-env VAR protect it with the passphrase in environment variable VAR: the file
                           is then an age file with a scrypt stanza, as 'age -p' writes
                           (commands that need it read the passphrase from BAKKER_PASSPHRASE)

Examples:
  bakker key generate --out /root/bakker-identity.txt
  age-keygen -y /root/bakker-identity.txt      # the recipient again`;

export async function run(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse('key', argv, { out: { type: 'string', short: 'o' }, 'passphrase-env': { type: 'string' } }, true);
  const [sub, ...rest] = positionals;
  if (sub !== 'generate') throw usageError(sub ? `bakker key: unknown subcommand "${sub}": see 'bakker key --help'` : "bakker key: a subcommand is required (generate): see 'bakker key --help'");
  if (rest.length) throw usageError(`bakker key generate: unexpected argument "${rest[0]}"`);
  if (!values.out) throw usageError('bakker key generate: --out FILE is required (where the identity goes)');
  const file = path.resolve(values.out);
  const { identity, recipient } = generateIdentity();
  const text = `# created: ${new Date().toISOString()} by bakker key generate\n# public key: ${recipient}\n${identity}\n`;
  let data = Buffer.from(text);
  const envName = values['passphrase-env'];
  if (envName !== undefined) {
    const pass = process.env[envName];
    if (!pass) throw usageError(`bakker key generate: --passphrase-env ${envName}: that variable is not set or empty`);
    const parts: Buffer[] = [];
    for await (const p of encrypt((async function* () {
      yield data;
    })(), [], { passphrase: pass })) parts.push(p);
    data = Buffer.concat(parts);
  }
  try {
    fs.writeFileSync(file, data, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw usageError(`bakker key generate: ${file} exists: an identity is never overwritten (its backups would be lost); pick another --out`);
    throw new BakkerError('IO', `cannot write ${file}: ${errMessage(err)}`, { cause: err });
  }
  out.line(recipient);
  out.summary({ command: 'key generate', identity: file, recipient, passphrase: envName !== undefined });
  return EXIT.OK;
}
