// Hardhat 2 is used ONLY as a real JSON-RPC EVM node for the chain tests (`hardhat node`); it never compiles:
// chain/build.js compiles the contracts with the pinned solc-js. `sources` points at an empty folder name so
// that no compiler is ever downloaded.
module.exports = {
  solidity: "0.8.30",
  paths: { sources: "./chain/.hardhat-no-sources", cache: "./hardhat-cache", artifacts: "./hardhat-cache/artifacts" },
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "prague",
      blockGasLimit: 60000000,
      accounts: { accountsBalance: "1000000000000000000000000000" },
      throwOnTransactionFailures: false,
      throwOnCallFailures: true,
      loggingEnabled: false,
      mining: { auto: true, interval: 0 },
    },
  },
};
