// node-oidc-provider (oidc-provider@9) configured like identity's client_credentials setup,
// for `python -m bench --peer` (bench/peer.py). One process, the in-memory adapter, one
// RSA-2048 key made at start. Usage:
//
//   PEER_CLIENT_ID=... PEER_CLIENT_SECRET=... node bench/peer_provider.mjs PACKAGE_DIR PORT
//
// PACKAGE_DIR is the installed oidc-provider (…/node_modules/oidc-provider): the package is
// installed outside this folder, so it is imported by path rather than by name.

process.env.NODE_ENV = 'production'; // before Koa reads it: no development output

import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [packageDir, port] = process.argv.slice(2);
const clientId = process.env.PEER_CLIENT_ID;
const clientSecret = process.env.PEER_CLIENT_SECRET;
if (!packageDir || !port || !clientId || !clientSecret) {
  console.error('usage: PEER_CLIENT_ID=.. PEER_CLIENT_SECRET=.. node peer_provider.mjs PACKAGE_DIR PORT');
  process.exit(2);
}

// The resource of the client_credentials scenario: RS256 JWT access tokens, like identity's.
const JWT_RESOURCE = 'https://api.example.test/';
// The resource of the introspection scenario: opaque tokens (oidc-provider refuses to
// introspect its JWTs: a resource server verifies those itself).
const OPAQUE_RESOURCE = 'https://opaque.example.test/';
const SCOPE = 'api:read api:write';

const { default: Provider, errors } = await import(pathToFileURL(join(packageDir, 'lib', 'index.js')).href);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: 'peer-bench' };

const resourceServers = {
  [JWT_RESOURCE]: {
    scope: SCOPE,
    accessTokenFormat: 'jwt',
    accessTokenTTL: 600,
    jwt: { sign: { alg: 'RS256' } },
  },
  [OPAQUE_RESOURCE]: { scope: SCOPE, accessTokenFormat: 'opaque', accessTokenTTL: 600 },
};

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPE,
      response_types: [],
      redirect_uris: [],
    },
  ],
  // A client's scope may only hold scopes the provider knows.
  scopes: ['openid', 'offline_access', ...SCOPE.split(' ')],
  jwks: { keys: [jwk] },
  ttl: { ClientCredentials: 600 }, // as the resource servers say; spares the default's notice
  // The bench never logs anyone in; a fixed cookie key spares the default's notice.
  cookies: { keys: ['peer-bench-cookie-key'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // What the default does for a confidential client (allow), without its notice.
      allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
    },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => JWT_RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        const info = resourceServers[resource];
        if (!info) throw new errors.InvalidTarget();
        return info;
      },
    },
  },
});

// A 5xx is worth a line in the log; nothing else is printed.
provider.on('server_error', (_ctx, error) => console.error('server_error', error));

const server = provider.listen(Number(port), '127.0.0.1');
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
