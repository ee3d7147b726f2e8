// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IProofVerifier
/// @notice What the OutputOracle calls to check a proof. Shaped like the Solidity verifiers
///         Barretenberg generates for UltraHonk (`verify(bytes calldata, bytes32[] calldata)`),
///         so a generated verifier can be plugged in without an adapter.
interface IProofVerifier {
    /// @notice Returns true iff `proof` proves the statement whose public inputs are
    ///         `publicInputs`. May revert instead of returning false.
    function verify(bytes calldata proof, bytes32[] calldata publicInputs) external view returns (bool);
}

/// @title IMockReporting
/// @notice Optional: a development verifier says so. The OutputOracle refuses any verifier whose
///         `isMock()` returns true unless the chain id is a dev chain id. A verifier without this
///         function (e.g. a generated UltraHonk verifier) counts as not a mock.
interface IMockReporting {
    function isMock() external view returns (bool);
}
