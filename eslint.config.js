// ESLint (flat config) for pneumolens: `npm run lint` runs it over src, bench, test, scripts and web.
// ESLint's and typescript-eslint's recommended rules, type-checked (recommendedTypeChecked): they
// find floating promises, awaits of non-promises, misused promises in callbacks, thrown non-errors
// and unsafe `any` flowing through typed code, the defects a server, a PACS watcher and a worker
// pool actually have. Type-checked linting of the whole tree takes about 45 s on 2 cores.
// Rules that would mean rewriting working code by taste are off or relaxed below, each with its reason.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['node_modules/', 'models/', 'runs/', 'test-results/', 'training/', 'deploy/', 'docs/', 'dist/', 'test/fixtures/golden/'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: { ...globals.node },
      parserOptions: {
        // src, test, bench and vitest.config.ts are in tsconfig.json (the project service finds it);
        // scripts/build-web.ts is reached through bench/web.ts; the files no tsconfig holds (the other
        // script, the root config files) get the default project.
        projectService: { allowDefaultProject: ['scripts/container-bench.ts', '*.js', '*.cjs'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Unused code is a defect here (a dropped argument, a forgotten result); `_name` marks one on purpose.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
      // A promise nobody awaits loses its error: keep it an error; `void p` says it is on purpose.
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: true }],
      // Fastify and node:events take async handlers by design; checking returns there is noise.
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      // An `await` of a non-promise is a misunderstanding; a Promise.all over a mix of finished values and
      // promises is not.
      '@typescript-eslint/await-thenable': ['error', { allowMixedPromiseArrays: true }],
      // `reject(signal.reason)` passes the abort reason on as it came (any/unknown by its type).
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingAny: true, allowThrowingUnknown: true }],
      // `cond ? a++ : b++` counts in the metrics; a bare expression otherwise is still a defect.
      '@typescript-eslint/no-unused-expressions': ['error', { allowTernary: true, allowShortCircuit: true }],
      // Off: model cards, schemas and PACS tags are loosely typed JSON (`unknown`), printed on purpose
      // with String() or in templates; these two rules flag every such print and find no defect there.
      '@typescript-eslint/no-base-to-string': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
      // Off: an `async` function without `await` is how an interface that wants a promise is met
      // (Fastify hooks, the engine's async API); the rule is style, not a defect.
      '@typescript-eslint/require-await': 'off',
      // Off: a redundant `as` is harmless, and the types it restates change as the code moves.
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
    },
  },
  {
    // Tests and benchmarks read arbitrary JSON answers (`await res.json()`, reports on disk) and poke at
    // them field by field; typing every one would be a rewrite of the suite for no defect found.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // `const { join } = await import('node:path')`: Node's module functions need no `this`.
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  {
    // The browser page: plain JS with JSDoc types, checked by tsconfig.web.json.
    files: ['web/**/*.js'],
    languageOptions: {
      globals: { ...globals.browser },
      parserOptions: {
        projectService: false,
        project: ['./tsconfig.web.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // tsconfig.web.json loads Node's types (the API types it imports live in src, next to Node code),
      // so the type check no longer stops Node globals in the page: this rule does.
      'no-restricted-globals': [
        'error',
        ...['process', 'Buffer', 'require', 'module', '__dirname', '__filename', 'global', 'setImmediate'].map((name) => ({
          name,
          message: 'web/ runs in the browser: no Node globals.',
        })),
      ],
    },
  },
  {
    // Plain JS without types: the config files at the root (this one, .dependency-cruiser.cjs) and the
    // plain-JS worker entry points in src (*.mjs).
    files: ['*.js', '*.cjs', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { ...globals.node } },
  },
);
