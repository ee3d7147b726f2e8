// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IProofVerifier, IMockReporting} from "./IProofVerifier.sol";

/// @title MockVerifier
/// @notice DEVELOPMENT ONLY. Proves nothing. It reports `isMock() == true`, and the OutputOracle
///         refuses it on any chain id that is not a dev chain id.
///         Modes:
///           AcceptAll              every proof verifies;
///           ProofHash              a proof verifies iff keccak256(proof) == expectedProofHash;
///           PublicInputsCommitment a proof verifies iff it is the 32 bytes
///                                  keccak256(abi.encodePacked(publicInputs)) — so a mock proof at
///                                  least shows the proposer computed the same public inputs as
///                                  the oracle.
contract MockVerifier is IProofVerifier, IMockReporting {
    enum Mode {
        AcceptAll,
        ProofHash,
        PublicInputsCommitment
    }

    Mode public immutable mode;
    bytes32 public immutable expectedProofHash;

    constructor(Mode mode_, bytes32 expectedProofHash_) {
        mode = mode_;
        expectedProofHash = expectedProofHash_;
    }

    function isMock() external pure returns (bool) {
        return true;
    }

    function verify(bytes calldata proof, bytes32[] calldata publicInputs) external view returns (bool) {
        if (mode == Mode.AcceptAll) return true;
        if (mode == Mode.ProofHash) return keccak256(proof) == expectedProofHash;
        return proof.length == 32 && bytes32(proof) == keccak256(abi.encodePacked(publicInputs));
    }
}
