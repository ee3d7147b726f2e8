// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title DevChains
/// @notice The chain ids on which development-only components (the mock verifier) are allowed.
///         Keep in sync with `DEV_CHAIN_IDS` in src/chain/anvil.ts and docs/contracts.md.
///         31337: anvil/hardhat default. 900, 901: proofline's dev L1 and dev L2.
///         1337: geth --dev and ganache.
library DevChains {
    function isDevChain(uint256 chainId) internal pure returns (bool) {
        return chainId == 31337 || chainId == 900 || chainId == 901 || chainId == 1337;
    }
}
